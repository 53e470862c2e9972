"""The benchmark's baseline: the least a Flask page that reads a table from PostgreSQL can do.

``/table`` opens a fresh SQLAlchemy session, reads 50 rows through the ORM and renders them
as an autoescaped 50-row, 5-column Jinja table. The portal's pages are measured against it.

Served with ``gunicorn 'bench.baseline_app:create_app()'``; ``BENCH_DATABASE_URL`` names the
database, and ``python -m bench.baseline_app`` creates and fills the table first.
"""

from __future__ import annotations

import os

from flask import Flask, render_template
from sqlalchemy import BigInteger, String, create_engine, delete, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ROW_COUNT = 100
PAGE_ROWS = 50
STATUSES = ("active", "suspended", "pending")
CURRENCIES = ("USD", "EUR", "GBP")

TABLE_TEMPLATE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Rows</title></head>
<body>
<table>
<thead><tr><th>Id</th><th>Name</th><th>Amount</th><th>Currency</th><th>Status</th></tr></thead>
<tbody>
{% for row in rows %}
<tr><td>{{ row.id }}</td><td>{{ row.name }}</td><td>{{ row.amount_minor }}</td>
<td>{{ row.currency }}</td><td>{{ row.status }}</td></tr>
{% endfor %}
</tbody>
</table>
</body>
</html>
"""


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bench_row"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))


def database_url() -> str:
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        raise RuntimeError("BENCH_DATABASE_URL is not set")
    return url


def seed(url: str) -> None:
    """Create ``bench_row`` and fill it with ROW_COUNT rows (replacing any there)."""
    engine = create_engine(url)
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as db_session:
            db_session.execute(delete(Row))
            db_session.add_all(
                Row(
                    id=number,
                    name=f"Customer <{number}> & Sons",  # something for autoescape to do
                    amount_minor=number * 12_345,
                    currency=CURRENCIES[number % len(CURRENCIES)],
                    status=STATUSES[number % len(STATUSES)],
                )
                for number in range(1, ROW_COUNT + 1)
            )
            db_session.commit()
    finally:
        engine.dispose()


def create_app() -> Flask:
    app = Flask(__name__)
    engine = create_engine(database_url())
    # compiled once, as Flask does for a template file; rendered through Flask's own path
    template = app.jinja_env.from_string(TABLE_TEMPLATE)

    @app.route("/table")
    def table() -> str:
        with Session(engine) as db_session:
            rows = db_session.scalars(select(Row).order_by(Row.id).limit(PAGE_ROWS)).all()
            return render_template(template, rows=rows)

    return app


if __name__ == "__main__":
    seed(database_url())
