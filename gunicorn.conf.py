"""gunicorn settings for the portal; gunicorn reads ./gunicorn.conf.py by itself.

Each worker connects to the database and the broker before it accepts requests
(:func:`portal.warmup.warm_up`), so the first requests after a start or a deploy do not pay for
it, and sends the work its requests commit to the broker from a background thread
(:func:`portal.outbox.items.dispatch_in_background`). Other WSGI apps served from this folder
(the benchmarks' baselines) are left alone.
"""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    from flask import Flask

    app = worker.wsgi
    if isinstance(app, Flask) and "portal_db" in app.extensions:
        from portal.outbox.items import dispatch_in_background
        from portal.warmup import warm_up

        warm_up(app, connections=int(worker.cfg.threads))
        dispatch_in_background(app)  # requests are answered without waiting for the broker
