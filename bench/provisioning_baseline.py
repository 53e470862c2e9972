"""The provisioning benchmark's baseline: bare Celery tasks making the Partner Center calls.

Served with ``celery -A bench.provisioning_baseline worker`` (the pool type and size of the
portal's worker). No Flask app, no database, no pacing, no mail: one ``bench.quantity_chain``
task per subscription carries that subscription's chain of quantity changes (targets and
request ids) and sends, for each change, the requests the Partner Center plugin sends
(``partner_center_provider.adapter``): the first change of a chain reads the subscription
(``GET``: no copy of it in this process yet), every change ``PATCH``es the whole resource back
with the new quantity (``If-Match`` its etag) and keeps the answer for the next one. So a chain
of 5 costs 6 calls, as in the portal (1,200 calls for 1,000 changes). Each change holds one of
``BENCH_CALLS_AT_ONCE`` host-wide call slots (an exclusive ``flock`` on one of that many files,
polled every 2 ms, as ``PORTAL_PROVIDER_CALLS_AT_ONCE`` does) around its calls.

The portal runs a subscription's later changes in the worker that ran the one before (the
outbox's follow-up), without a broker message; one task per chain is the same order of work.

The calls go through one pooled ``httpx.Client`` per process (the plugin's client library),
with the headers the plugin sends (bearer token, ``MS-RequestId``, ``MS-CorrelationId``,
``MS-Contract-Version``, ``MS-PartnerCenter-Application``). Settings, from the environment:
``BENCH_BROKER_URL``, ``BENCH_QUEUE``, ``BENCH_PARTNER_CENTER_URL``, ``BENCH_TOKEN``,
``BENCH_CALLS_AT_ONCE`` (0: no cap), ``BENCH_SLOTS_DIR``.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from celery import Celery  # type: ignore[import-untyped]
from celery.signals import worker_process_init  # type: ignore[import-untyped]

BASE_URL = os.environ.get("BENCH_PARTNER_CENTER_URL", "http://127.0.0.1:9").rstrip("/")
TOKEN = os.environ.get("BENCH_TOKEN", "bench-static-token")
CALLS_AT_ONCE = int(os.environ.get("BENCH_CALLS_AT_ONCE", "0"))
SLOTS_DIR = Path(os.environ.get("BENCH_SLOTS_DIR", "/tmp/portal-bench-baseline-slots"))
TIMEOUT_S = 10.0
SLOT_POLL_S = 0.002
TASK = "bench.quantity_chain"

celery = Celery("bench_provisioning_baseline", set_as_current=False)
celery.conf.update(  # the portal's delivery settings (portal.outbox.celery_app)
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13"),
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench-provisioning-baseline"),
    worker_send_task_events=False,
)

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _new_client() -> httpx.Client:
    return httpx.Client(
        base_url=BASE_URL,
        timeout=httpx.Timeout(TIMEOUT_S),
        headers={
            "Accept": "application/json",
            "MS-Contract-Version": "v1",
            "MS-PartnerCenter-Application": "CSP Portal",
            "User-Agent": "csp-portal-bench-baseline/0.1",
        },
        follow_redirects=False,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


def client() -> httpx.Client:
    """This process's client (made at the pool process's start; lazily under other pools)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = _new_client()
    return _client


def _fresh_client(**_: Any) -> None:
    """A forked pool process makes its own client before its first task, as the portal's
    workers connect to their database before theirs (building one costs an SSL context)."""
    global _client
    _client = _new_client()


worker_process_init.connect(_fresh_client, weak=False)


@contextmanager
def call_slot() -> Iterator[None]:
    """Hold one of the host's CALLS_AT_ONCE slots (an exclusive ``flock`` on one of as many
    files, opened per hold) for the block; no cap when CALLS_AT_ONCE is 0."""
    if CALLS_AT_ONCE < 1:
        yield
        return
    SLOTS_DIR.mkdir(parents=True, exist_ok=True)
    start = random.randrange(CALLS_AT_ONCE)
    fd = -1
    while fd < 0:
        for offset in range(CALLS_AT_ONCE):
            path = SLOTS_DIR / f"slot-{(start + offset) % CALLS_AT_ONCE}"
            candidate = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(candidate, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(candidate)
                continue
            fd = candidate
            break
        else:
            time.sleep(SLOT_POLL_S)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def call(
    method: str,
    path: str,
    *,
    json: Any = None,
    request_id: str | None = None,
    if_match: str | None = None,
) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "MS-RequestId": request_id or str(uuid.uuid4()),
        "MS-CorrelationId": str(uuid.uuid4()),
    }
    if if_match:
        headers["If-Match"] = if_match
    response = client().request(method, path, json=json, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text}")
    return response


def quantity_chain(tenant: str, ref: str, targets: list[int], request_ids: list[str]) -> int:
    """Change the subscription's quantity to each target in turn; returns the last quantity."""
    path = f"/v1/customers/{tenant}/subscriptions/{ref}"
    resource: dict[str, Any] | None = None
    for target, request_id in zip(targets, request_ids, strict=True):
        with call_slot():
            if resource is None:
                resource = call("GET", path).json()
            assert resource is not None
            resource["quantity"] = target
            etag = (resource.get("attributes") or {}).get("etag")
            answer = call("PATCH", path, json=resource, request_id=request_id, if_match=etag)
        resource = answer.json()
    assert resource is not None
    return int(resource["quantity"])


celery.task(name=TASK, shared=False)(quantity_chain)
