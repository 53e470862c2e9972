"""The one tenant-scoped data-access layer.

Every ORM query made through a request's session passes through :func:`_restrict_to_scope`,
which adds the current partner's and customer's criteria to every scoped model it touches
(including joins, relationship loads, UPDATEs and DELETEs). A view therefore cannot forget
the tenant filter: it never writes it. Code that must look across tenants (sign-in picking
the account, the CLI, background jobs) says so with ``execution_options(unscoped=True)``
or runs on a session that has no scope; ``unscoped_customer=True`` keeps the partner
filter but lifts the customer one (accepting an invitation to another account).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from flask import abort
from sqlalchemy import Executable, ForeignKey, event, select
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, with_loader_criteria

T = TypeVar("T")
# how a customer's scope narrows a model that is not CustomerScoped: customer id -> criteria
Narrowing = Callable[[int], Callable[[Any], Any]]
_CUSTOMER_NARROWING: dict[type, Narrowing] = {}


def narrow_by_customer(model: type, narrowing: Narrowing) -> None:
    """Say how a customer's scope narrows ``model``, a table that is not :class:`CustomerScoped`
    but still belongs to customers (the customers themselves; their people).

    ``narrowing`` takes the customer's id and returns the criteria as
    :func:`~sqlalchemy.orm.with_loader_criteria` takes them: a lambda of the class. Each model
    registers itself where it is defined, so the kernel imports no capability.
    """
    _CUSTOMER_NARROWING[model] = narrowing
    _criteria.cache_clear()
    _scoped.cache_clear()


@dataclass(frozen=True)
class Scope:
    """What the current request may see: one partner, and within it at most one customer."""

    partner_id: int
    customer_id: int | None = None


def set_scope(db_session: Session, scope: Scope) -> None:
    db_session.info["scope"] = scope


def get_scope(db_session: Session) -> Scope | None:
    scope = db_session.info.get("scope")
    return scope if isinstance(scope, Scope) else None


@event.listens_for(Session, "do_orm_execute")
def _restrict_to_scope(state: ORMExecuteState) -> None:
    scope = get_scope(state.session)
    if scope is None or state.execution_options.get("unscoped", False):
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    customer_wide = not state.execution_options.get("unscoped_customer", False)
    state.statement = _scoped(state.statement, scope, customer_wide)


@lru_cache(maxsize=256)
def _scoped(statement: Executable, scope: Scope, customer_wide: bool) -> Executable:
    """``statement`` with the scope's criteria, the same object each time for the same three.

    A statement built once (a module constant) then keeps its memoised cache key and compiled
    form from one request to the next; given a fresh copy each time, SQLAlchemy would work
    them out again on every execution (about 5 % of a page). Statements are immutable, and
    ``scope`` is part of the key, so a copy never serves another tenant. Statements built per
    call only pass through: they are looked up once, and the least recently used drop out.
    """
    return statement.options(*_criteria(scope, customer_wide))


@lru_cache(maxsize=1024)
def _criteria(scope: Scope, customer_wide: bool = True) -> tuple[Any, ...]:
    partner_id = scope.partner_id
    options: list[Any] = [
        with_loader_criteria(
            PartnerScoped, lambda cls: cls.partner_id == partner_id, include_aliases=True
        )
    ]
    if scope.customer_id is not None and customer_wide:
        customer_id = scope.customer_id
        options += [
            with_loader_criteria(
                CustomerScoped, lambda cls: cls.customer_id == customer_id, include_aliases=True
            ),
        ]
        options += [
            with_loader_criteria(model, narrowing(customer_id), include_aliases=True)
            for model, narrowing in _CUSTOMER_NARROWING.items()
        ]
    return tuple(options)


def get_or_404(db_session: Session, model: type[T], object_id: int) -> T:
    """Load one row by id within the current scope, or answer 404.

    Uses a query rather than ``Session.get`` so the identity map can never hand back a row
    the scope would have hidden.
    """
    id_column = getattr(model, "id")  # noqa: B009  (every scoped model has an integer id)
    found: T | None = db_session.scalars(select(model).where(id_column == object_id)).first()
    if found is None:
        abort(404)
    return found


class PartnerScoped:
    """A row that belongs to one partner brand; invisible from any other partner's requests."""

    partner_id: Mapped[int] = mapped_column(
        ForeignKey("partner.id", ondelete="CASCADE"), index=True
    )


class CustomerScoped:
    """A row that belongs to one customer account; invisible from any other customer's requests."""

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customer.id", ondelete="CASCADE"), index=True
    )
