"""A local Microsoft Partner Center (REST API v1) for tests and benchmarks.

:class:`FakePartnerCenter` serves the calls the adapter makes on ``http://127.0.0.1:<port>``
and follows the documented contract (``integration-apis.md`` §1):

- ``Authorization: Bearer`` is required (``401`` otherwise, or for a token :meth:`expire_token`
  made stale);
- **replay by** ``MS-RequestId``: a write whose ``MS-RequestId`` was seen gets the first answer
  again and has no second effect; :meth:`effects` counts the effects per request id, so a test
  proves exactly-once. Answers that only mean "not now" (429, 401, 5xx, etag or in-progress
  conflicts) are not kept, so the retry is processed;
- error bodies ``{code, description, data, source}`` plus ``message``, ``errorName``,
  ``isRetryable``; ``429`` + ``Retry-After`` (injected, or from a per-tenant budget);
- quantity ``PATCH`` of the full resource (``If-Match`` checked: 400/2055), ``200`` at once or
  ``202`` + ``Location`` when ``quantity_change_delay`` > 0 (the new quantity shows after that
  many seconds; ``math.inf``: never); 2002 outside [``min_quantity``, ``max_quantity``];
  an NCE reduction of more seats than are refundable (``refundableQuantity`` /
  ``cancellationAllowedUntilDate``) is 400/800045; unknown subscription 404/20003;
- orders: ``POST /v1/customers/{tenant}/orders`` buys one subscription per line item; 403/13605
  when the customer has not accepted the Microsoft Customer Agreement (``require_mca``);
- agreements: ``GET /v1/agreements`` (no ``agreementType``: the Microsoft *Cloud* Agreement, as
  Partner Center does), ``POST``/``GET /v1/customers/{tenant}/agreements``, 600061 for a
  duplicate confirmation.

Faults for the next matching requests: :meth:`inject` with :class:`Fault` (latency, 429, 5xx,
timeout, a dropped connection after the effect, 401, business errors). ``latency`` delays every
answer (a benchmark's "100 ms Partner Center")::

    with FakePartnerCenter(latency=0.1) as fake:
        sub = fake.add_subscription(tenant, "CFQ7TTC0LH18:0001", 5)
        fake.inject(Fault.drop_after_effect(method="PATCH"))
        ...
        assert fake.effects(request_id) == 1
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from dateutil.relativedelta import relativedelta

from partner_center_provider.client import ms_request_id
from portal.testing.fake_server import FakeResponse, FakeServer, RecordedRequest

MCA = "MicrosoftCustomerAgreement"
MCLOUD = "MicrosoftCloudAgreement"
DEFAULT_MCA_TEMPLATE_ID = "117a4bc3-f2e8-4b1e-9e0a-6c6d8d2b0e5f"
DEFAULT_MCLOUD_TEMPLATE_ID = "0b1c3a7e-2f4d-4a0c-8f53-7d2e6a9c1b40"
MCA_LINK = "https://aka.ms/customeragreement"
MCLOUD_LINK = "https://aka.ms/microsoftcloudagreement"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# answers that mean "not now": never kept for replay, so a retry with the same id is processed
TRANSIENT_CODES = frozenset({"2055", "800014", "800060"})

TERMS = {
    "P1M": relativedelta(months=1),
    "P1Y": relativedelta(years=1),
    "P3Y": relativedelta(years=3),
}

_SUBSCRIPTION = re.compile(r"^/v1/customers/([^/]+)/subscriptions/([^/]+)$")
_SUBSCRIPTIONS = re.compile(r"^/v1/customers/([^/]+)/subscriptions$")
_ORDER = re.compile(r"^/v1/customers/([^/]+)/orders/([^/]+)$")
_ORDERS = re.compile(r"^/v1/customers/([^/]+)/orders$")
_CUSTOMER_AGREEMENTS = re.compile(r"^/v1/customers/([^/]+)/agreements$")
_CUSTOMER = re.compile(r"^/v1/customers/([^/]+)/")
_CUSTOMER_ONLY = re.compile(r"^/v1/customers/([^/]+)$")


# -- faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injected fault, used by the next request it matches (``method``; ``path``: a
    substring of the request path). Build them with the class methods."""

    kind: str
    seconds: float = 0.0
    status: int = 0
    code: int | str | None = None
    description: str | None = None
    effect: bool = True
    method: str | None = None
    path: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path is None or self.path in path
        )

    @classmethod
    def latency(
        cls, seconds: float, *, method: str | None = None, path: str | None = None
    ) -> Fault:
        """Answer normally, ``seconds`` late."""
        return cls("latency", seconds=seconds, method=method, path=path)

    @classmethod
    def throttle(
        cls, retry_after: float = 57, *, method: str | None = None, path: str | None = None
    ) -> Fault:
        """``429`` with ``Retry-After: <retry_after>`` (whole seconds); nothing happens."""
        return cls("throttle", seconds=retry_after, status=429, method=method, path=path)

    @classmethod
    def server_error(
        cls,
        status: int = 503,
        *,
        retry_after: float | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """A 5xx (with ``Retry-After`` when given); nothing happens."""
        return cls(
            "server_error", seconds=retry_after or 0.0, status=status, method=method, path=path
        )

    @classmethod
    def timeout(
        cls,
        seconds: float,
        *,
        effect: bool = True,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """Answer only after ``seconds`` (make it longer than the client's timeout). With
        ``effect`` the request is carried out first (its answer is kept for a replay); without,
        nothing happens and the connection is closed after the wait."""
        return cls("timeout", seconds=seconds, effect=effect, method=method, path=path)

    @classmethod
    def drop_after_effect(cls, *, method: str | None = None, path: str | None = None) -> Fault:
        """Carry the request out (and keep its answer), then close the connection without
        answering: the client cannot know whether it had an effect."""
        return cls("drop", effect=True, method=method, path=path)

    @classmethod
    def drop_before_effect(cls, *, method: str | None = None, path: str | None = None) -> Fault:
        """Close the connection without answering and without doing anything."""
        return cls("drop", effect=False, method=method, path=path)

    @classmethod
    def unauthorized(
        cls, code: int | str | None = None, *, method: str | None = None, path: str | None = None
    ) -> Fault:
        """``401`` (an expired token; ``code=900421``: the token lacks MFA)."""
        return cls("unauthorized", status=401, code=code, method=method, path=path)

    @classmethod
    def business(
        cls,
        status: int,
        code: int | str,
        description: str,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """A business error ``{code, description, …}`` with ``status``; nothing happens. For a
        write it is kept for replay like any business answer."""
        return cls(
            "business", status=status, code=code, description=description, method=method, path=path
        )


@dataclass(frozen=True)
class Effect:
    """One write the fake carried out."""

    request_id: str
    method: str
    path: str
    at: float


# -- state -------------------------------------------------------------------------------------


@dataclass
class _Refund:
    quantity: int
    until: datetime


@dataclass
class _Subscription:
    id: str
    tenant: str
    offer_id: str
    quantity: int
    status: str
    etag: str
    created: datetime
    commitment_end: date
    cancellation_until: datetime
    term_duration: str
    billing_cycle: str
    order_id: str | None
    friendly_name: str
    # seats that may still be reduced with a refund (NCE), each batch with its own window
    refunds: list[_Refund] = field(default_factory=list)
    # a 202 change being applied: (target quantity, monotonic time it shows)
    pending: tuple[int, float] | None = None
    # renewal: whether the term renews, and the instructions for the next term (None: none)
    auto_renew: bool = True
    next_term: dict[str, Any] | None = None


@dataclass
class _Customer:
    tenant: str
    mca_accepted: bool = False
    name: str = ""
    domain: str = ""
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    agreements: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Kept:
    method: str
    path: str
    response: FakeResponse


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def _new_etag() -> str:
    return uuid.uuid4().hex


def error_body(
    code: int | str, description: str, *, name: str | None = None, retryable: bool = False
) -> dict[str, Any]:
    """Partner Center's error body, old and new fields."""
    return {
        "code": code,
        "description": description,
        "data": [],
        "source": "PartnerFD",
        "message": description,
        "errorName": name or "",
        "isRetryable": retryable,
        "parameters": {},
        "errorMessageExtended": f"InternalErrorCode={code}",
    }


def _error(
    status: int,
    code: int | str,
    description: str,
    *,
    name: str | None = None,
    retryable: bool = False,
    headers: dict[str, str] | None = None,
) -> FakeResponse:
    return FakeResponse(
        status, error_body(code, description, name=name, retryable=retryable), headers or {}
    )


def _collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "totalCount": len(items),
        "items": items,
        "links": {},
        "attributes": {"objectType": "Collection"},
    }


# -- the fake ----------------------------------------------------------------------------------


class FakePartnerCenter:
    """A Partner Center on 127.0.0.1 with in-memory, thread-safe state.

    Settings (attributes; change them at any time): ``latency`` (seconds before every answer),
    ``min_quantity`` / ``max_quantity`` (2002 outside), ``require_mca`` (13605 for purchases of
    customers who have not accepted), ``quantity_change_delay`` (0: ``200``; > 0: ``202`` +
    ``Location``, shown after that many seconds; ``math.inf``: never), ``refund_window`` (NCE:
    7 days), ``throttle_limit`` / ``throttle_window`` (a per-customer-tenant request budget:
    ``429`` past it; None: no budget) and ``clock`` (the fake's UTC "now", for the NCE
    windows).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        min_quantity: int = 1,
        max_quantity: int = 300,
        require_mca: bool = True,
        quantity_change_delay: float = 0.0,
        refund_window: timedelta = timedelta(days=7),
        throttle_limit: int | None = None,
        throttle_window: float = 60.0,
        clock: Callable[[], datetime] = _now,
        mca_template_id: str = DEFAULT_MCA_TEMPLATE_ID,
    ) -> None:
        self.latency = latency
        self.min_quantity = min_quantity
        self.max_quantity = max_quantity
        self.require_mca = require_mca
        self.quantity_change_delay = quantity_change_delay
        self.refund_window = refund_window
        self.throttle_limit = throttle_limit
        self.throttle_window = throttle_window
        self.clock = clock
        self.mca_template_id = mca_template_id
        self.mcloud_template_id = DEFAULT_MCLOUD_TEMPLATE_ID
        self._lock = threading.RLock()
        self._customers: dict[str, _Customer] = {}
        self._kept: dict[str, _Kept] = {}
        self._effects: defaultdict[str, int] = defaultdict(int)
        self._effect_log: list[Effect] = []
        self._replays: defaultdict[str, int] = defaultdict(int)
        self._faults: list[Fault] = []
        self._expired_tokens: set[str] = set()
        self._calls: dict[str, deque[float]] = defaultdict(deque)
        self.server = FakeServer(self._handle)

    # -- running -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the adapter's ``BASE_URL``."""
        return self.server.url

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (headers case-insensitive)."""
        return list(self.server.requests)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of the fake's own bugs (each answered 500)."""
        return list(self.server.errors)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return self.server.requests_to(path, method)

    def start(self) -> FakePartnerCenter:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakePartnerCenter:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- set-up and inspection -------------------------------------------------------------------

    def add_customer(
        self,
        tenant: str | None = None,
        *,
        mca_accepted: bool = False,
        name: str | None = None,
        domain: str | None = None,
    ) -> str:
        """A customer tenant (a new GUID when not given), with its company name and primary
        domain when given; returns its id."""
        tenant = tenant or str(uuid.uuid4())
        with self._lock:
            customer = self._customer(tenant)
            customer.mca_accepted = customer.mca_accepted or mca_accepted
            customer.name = name or customer.name
            customer.domain = domain or customer.domain
        return tenant

    def accept_mca(self, tenant: str) -> None:
        """The customer accepted the Microsoft Customer Agreement (say, in the admin center)."""
        self.add_customer(tenant, mca_accepted=True)

    def mca_accepted(self, tenant: str) -> bool:
        with self._lock:
            customer = self._customers.get(tenant)
            return bool(customer and customer.mca_accepted)

    def add_subscription(
        self,
        tenant: str,
        offer_id: str,
        quantity: int,
        *,
        subscription_id: str | None = None,
        status: str = "active",
        term_duration: str = "P1M",
        billing_cycle: str = "monthly",
        purchased_at: datetime | None = None,
        refundable_quantity: int | None = None,
        cancellation_allowed_until: datetime | None = None,
        friendly_name: str | None = None,
    ) -> str:
        """A subscription of ``tenant`` (created too); returns its id.

        ``purchased_at`` (default now) starts the term and the NCE window
        (``cancellation_allowed_until``, default ``purchased_at + refund_window``). Until
        then ``refundable_quantity`` seats (default all) may be reduced; after it, none.
        """
        with self._lock:
            return self._create_subscription(
                tenant,
                offer_id,
                quantity,
                subscription_id=subscription_id,
                status=status,
                term_duration=term_duration,
                billing_cycle=billing_cycle,
                purchased_at=purchased_at,
                refundable_quantity=refundable_quantity,
                cancellation_allowed_until=cancellation_allowed_until,
                friendly_name=friendly_name,
                order_id=None,
            )

    def update_subscription(
        self,
        tenant: str,
        subscription_id: str,
        *,
        quantity: int | None = None,
        status: str | None = None,
        refundable_quantity: int | None = None,
    ) -> None:
        """Change a subscription behind the portal's back (as in Partner Center's own UI)."""
        with self._lock:
            sub = self._subscription_or_raise(tenant, subscription_id)
            if quantity is not None:
                sub.quantity = quantity
            if status is not None:
                sub.status = status
            if refundable_quantity is not None:
                until = self.clock() + self.refund_window
                sub.refunds = [_Refund(refundable_quantity, until)] if refundable_quantity else []
            sub.etag = _new_etag()

    def subscription(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        """The subscription as ``GET`` shows it (a copy), None when there is none."""
        with self._lock:
            customer = self._customers.get(tenant)
            sub = customer.subscriptions.get(subscription_id) if customer else None
            return self._render(sub) if sub else None

    def subscriptions(self, tenant: str) -> list[dict[str, Any]]:
        with self._lock:
            customer = self._customers.get(tenant)
            return [self._render(s) for s in customer.subscriptions.values()] if customer else []

    def orders(self, tenant: str) -> list[dict[str, Any]]:
        with self._lock:
            customer = self._customers.get(tenant)
            return copy.deepcopy(list(customer.orders.values())) if customer else []

    def agreements(self, tenant: str) -> list[dict[str, Any]]:
        """Partner attestations of the customer's acceptance."""
        with self._lock:
            customer = self._customers.get(tenant)
            return copy.deepcopy(customer.agreements) if customer else []

    def effects(self, request_id: str) -> int:
        """How many times a write with this request id took effect (0, or 1 when it worked).

        ``request_id`` is the ``MS-RequestId`` or the portal's own id it was derived from."""
        with self._lock:
            return self._effects.get(ms_request_id(request_id), 0)

    @property
    def total_effects(self) -> int:
        """Writes carried out, all request ids together."""
        with self._lock:
            return sum(self._effects.values())

    def effect_log(self) -> list[Effect]:
        with self._lock:
            return list(self._effect_log)

    def replays(self, request_id: str) -> int:
        """How many times the kept answer for this request id was sent again."""
        with self._lock:
            return self._replays.get(ms_request_id(request_id), 0)

    def inject(self, *faults: Fault, times: int = 1) -> None:
        """Queue ``faults`` (each ``times`` over); each is used by the next request it matches."""
        with self._lock:
            for _ in range(times):
                self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def expire_token(self, token: str) -> None:
        """Requests bearing ``token`` get ``401`` from now on."""
        with self._lock:
            self._expired_tokens.add(token)

    # -- the HTTP side -------------------------------------------------------------------------

    def _handle(self, request: RecordedRequest) -> FakeResponse:
        method, path = request.method, request.path
        with self._lock:
            fault = self._take_fault(method, path)
        delay = self.latency
        if fault is not None and fault.kind == "latency":
            delay += fault.seconds
            fault = None
        if delay > 0:
            time.sleep(delay)
        if fault is not None and fault.kind == "timeout" and not fault.effect:
            return FakeResponse(504, b"", delay=fault.seconds, drop=True)
        if fault is not None and fault.kind == "drop" and not fault.effect:
            return FakeResponse(drop=True)
        refused = self._refuse(request, fault)
        if refused is not None:
            return refused
        response = self._serve(request, fault)
        if fault is not None and fault.kind == "timeout":
            return replace(response, delay=fault.seconds)
        if fault is not None and fault.kind == "drop":
            return FakeResponse(drop=True)
        return response

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.matches(method, path):
                return self._faults.pop(index)
        return None

    def _refuse(self, request: RecordedRequest, fault: Fault | None) -> FakeResponse | None:
        """The answers given before anything is looked at: auth, faults, throttling."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if fault is not None and fault.kind == "unauthorized":
            if str(fault.code) == "900421":
                return _error(
                    401,
                    900421,
                    "The access token lacks the multi-factor authentication claim required for "
                    "App+User calls.",
                    name="MfaRequired",
                )
            return _error(401, fault.code or 401, "Access denied: the token has expired.")
        with self._lock:
            expired = token in self._expired_tokens
        if not token or expired:
            return _error(
                401, 401, "Access denied: the bearer token is missing, invalid or expired."
            )
        if fault is not None and fault.kind == "throttle":
            return _throttled(fault.seconds)
        if fault is not None and fault.kind == "server_error":
            headers = {"Retry-After": str(math.ceil(fault.seconds))} if fault.seconds else {}
            return _error(
                fault.status,
                fault.status,
                "The service is temporarily unavailable.",
                retryable=True,
                headers=headers,
            )
        if self.throttle_limit is not None:
            match = _CUSTOMER.match(request.path)
            if match:
                wait = self._spend_budget(unquote(match.group(1)))
                if wait is not None:
                    return _throttled(wait)
        return None

    def _spend_budget(self, tenant: str) -> float | None:
        now = time.monotonic()
        with self._lock:
            calls = self._calls[tenant]
            while calls and calls[0] <= now - self.throttle_window:
                calls.popleft()
            if self.throttle_limit is not None and len(calls) >= self.throttle_limit:
                return calls[0] + self.throttle_window - now
            calls.append(now)
        return None

    def _serve(self, request: RecordedRequest, fault: Fault | None) -> FakeResponse:
        method, path = request.method, request.path
        request_id = (request.headers.get("MS-RequestId") or "").strip()
        write = method in WRITES
        with self._lock:
            if write and request_id:
                kept = self._kept.get(request_id)
                if kept is not None:
                    if (kept.method, kept.path) != (method, path):
                        return _error(
                            400,
                            800002,
                            "Invalid request input: this MS-RequestId was used for another "
                            "request.",
                            name="InvalidInput",
                        )
                    self._replays[request_id] += 1
                    return kept.response
            if fault is not None and fault.kind == "business":
                response = _error(fault.status, fault.code or 0, fault.description or "Refused.")
                effected = False
            else:
                response, effected = self._route(request, request_id)
            if write and request_id and _final(response):
                self._kept[request_id] = _Kept(method, path, response)
            if effected:
                self._effects[request_id] += 1
                self._effect_log.append(Effect(request_id, method, path, time.monotonic()))
            return response

    def _route(self, request: RecordedRequest, request_id: str) -> tuple[FakeResponse, bool]:
        """The answer and whether it changed anything. Runs under the lock."""
        method, path = request.method, request.path
        if request_id and not _is_guid(request_id):
            return _invalid("MS-RequestId must be a GUID"), False
        if method in WRITES and request.body:
            content_type = request.headers.get("Content-Type", "")
            if "application/json" not in content_type.lower():
                return _error(415, 800002, "Invalid request input: send application/json."), False
        if match := _SUBSCRIPTION.fullmatch(path):
            tenant, ref = unquote(match.group(1)), unquote(match.group(2))
            if method == "GET":
                return self._get_subscription(tenant, ref), False
            if method == "PATCH":
                return self._patch_subscription(request, tenant, ref)
        elif match := _SUBSCRIPTIONS.fullmatch(path):
            if method == "GET":
                items = self.subscriptions(unquote(match.group(1)))
                return FakeResponse(200, _collection(items)), False
        elif match := _ORDERS.fullmatch(path):
            if method == "POST":
                return self._create_order(request, unquote(match.group(1)))
        elif match := _ORDER.fullmatch(path):
            if method == "GET":
                customer = self._customers.get(unquote(match.group(1)))
                order = customer.orders.get(unquote(match.group(2))) if customer else None
                if order is None:
                    return _error(404, 1000, "Order not found.", name="NotFound"), False
                return FakeResponse(200, copy.deepcopy(order)), False
        elif path == "/v1/customers":
            if method == "GET":
                return self._find_customers(request), False
        elif match := _CUSTOMER_ONLY.fullmatch(path):
            if method == "GET":
                return self._get_customer(unquote(match.group(1))), False
        elif path == "/v1/agreements":
            if method == "GET":
                return self._list_templates(request), False
        elif match := _CUSTOMER_AGREEMENTS.fullmatch(path):
            tenant = unquote(match.group(1))
            if method == "POST":
                return self._confirm_agreement(request, tenant)
            if method == "GET":
                return self._customer_agreements(request, tenant), False
        else:
            return _error(404, 1000, "Not found.", name="NotFound"), False
        return _error(405, 405, f"{method} is not allowed here.", name="MethodNotAllowed"), False

    # -- subscriptions ---------------------------------------------------------------------------

    def _get_subscription(self, tenant: str, ref: str) -> FakeResponse:
        sub = self._find(tenant, ref)
        if sub is None:
            return _not_found(ref)
        return FakeResponse(200, self._render(sub), {"ETag": sub.etag})

    def _patch_subscription(
        self, request: RecordedRequest, tenant: str, ref: str
    ) -> tuple[FakeResponse, bool]:
        sub = self._find(tenant, ref)
        if sub is None:
            return _not_found(ref), False
        try:
            body = request.json()
        except ValueError:
            return _invalid("the body is not JSON"), False
        if not isinstance(body, dict):
            return _invalid("the body must be a Subscription"), False
        fields = {k.lower(): v for k, v in body.items()}
        if "id" in fields and str(fields["id"]) != sub.id:
            return _invalid("the subscription id in the body does not match the URL"), False
        target = fields.get("quantity")
        if isinstance(target, bool) or not isinstance(target, int):
            return _invalid("quantity must be a whole number"), False
        auto_renew = fields.get("autorenewenabled", sub.auto_renew)
        if not isinstance(auto_renew, bool):
            return _invalid("autoRenewEnabled must be true or false"), False
        next_term = fields.get("schedulednextterminstructions")
        if next_term is not None:
            scheduled = next_term.get("quantity") if isinstance(next_term, dict) else None
            if isinstance(scheduled, bool) or not isinstance(scheduled, int):
                return _invalid("scheduledNextTermInstructions.quantity must be a number"), False
            if not self.min_quantity <= scheduled <= self.max_quantity:
                return _out_of_range(), False
        if_match = request.headers.get("If-Match")
        if if_match and if_match.strip('"') != sub.etag:
            return _error(400, 2055, "Etag is no longer valid", name="EtagMismatch"), False
        if sub.pending is not None:
            return _error(
                409,
                800060,
                "Your order is in progress. Try again after it completes.",
                name="OrderInProgress",
                retryable=True,
            ), False
        if sub.status == "suspended":
            return _error(
                400,
                2001,
                "Subscription quantity cannot be increased or decreased while subscription is "
                "being suspended",
                name="SubscriptionSuspended",
            ), False
        if sub.status == "deleted":
            return _error(
                400,
                2011,
                f"Subscription with id {sub.id} and deleted status cannot be updated.",
                name="SubscriptionDeleted",
            ), False
        if not self.min_quantity <= target <= self.max_quantity:
            return _out_of_range(), False
        if target < sub.quantity and not self._refundable(sub, sub.quantity - target):
            return _error(
                400,
                800045,
                "Seat reduction is not allowed outside the cancellation window. You can lower "
                "the quantity for the next term instead.",
                name="SeatReductionNotAllowed",
            ), False
        if sub.status != "active" and (auto_renew != sub.auto_renew or next_term != sub.next_term):
            return _invalid("only an active subscription's renewal can be changed"), False
        sub.auto_renew = auto_renew
        sub.next_term = copy.deepcopy(next_term) if isinstance(next_term, dict) else None
        if target == sub.quantity:  # the renewal only (or nothing): applied at once
            sub.etag = _new_etag()
            return FakeResponse(200, self._render(sub), {"ETag": sub.etag}), True
        if self.quantity_change_delay > 0:
            sub.pending = (target, time.monotonic() + self.quantity_change_delay)
            location = f"/v1/customers/{tenant}/subscriptions/{sub.id}"
            return FakeResponse(202, b"", {"Location": location}), True
        self._apply_quantity(sub, target)
        return FakeResponse(200, self._render(sub), {"ETag": sub.etag}), True

    def _refundable(self, sub: _Subscription, reduction: int) -> bool:
        now = self.clock()
        return sum(r.quantity for r in sub.refunds if r.until > now) >= reduction

    def _apply_quantity(self, sub: _Subscription, target: int) -> None:
        now = self.clock()
        sub.refunds = [r for r in sub.refunds if r.until > now and r.quantity > 0]
        if target > sub.quantity:
            sub.refunds.append(_Refund(target - sub.quantity, now + self.refund_window))
        else:
            reduce = sub.quantity - target
            for refund in reversed(sub.refunds):  # the newest seats go first
                taken = min(refund.quantity, reduce)
                refund.quantity -= taken
                reduce -= taken
            sub.refunds = [r for r in sub.refunds if r.quantity > 0]
        sub.quantity = target
        sub.pending = None
        sub.etag = _new_etag()

    def _settle(self, sub: _Subscription) -> None:
        if sub.pending is not None and time.monotonic() >= sub.pending[1]:
            self._apply_quantity(sub, sub.pending[0])

    def _find(self, tenant: str, ref: str) -> _Subscription | None:
        customer = self._customers.get(tenant)
        sub = customer.subscriptions.get(ref) if customer else None
        if sub is not None:
            self._settle(sub)
        return sub

    def _subscription_or_raise(self, tenant: str, ref: str) -> _Subscription:
        sub = self._find(tenant, ref)
        if sub is None:
            raise KeyError(f"no subscription {ref!r} for customer {tenant!r}")
        return sub

    def _render(self, sub: _Subscription) -> dict[str, Any]:
        self._settle(sub)
        now = self.clock()
        refunds = [(r.quantity, r.until) for r in sub.refunds if r.until > now and r.quantity]
        path = f"/v1/customers/{sub.tenant}/subscriptions/{sub.id}"
        return {
            "id": sub.id,
            "offerId": sub.offer_id,
            "offerName": sub.friendly_name,
            "friendlyName": sub.friendly_name,
            "productType": {"id": "OnlineServicesNCE", "displayName": "OnlineServicesNCE"},
            "quantity": sub.quantity,
            "unitType": "Licenses",
            "creationDate": _iso(sub.created),
            "effectiveStartDate": _iso(sub.created),
            "commitmentEndDate": f"{sub.commitment_end.isoformat()}T00:00:00Z",
            "cancellationAllowedUntilDate": _iso(sub.cancellation_until),
            "status": sub.status,
            "autoRenewEnabled": sub.auto_renew,
            "scheduledNextTermInstructions": copy.deepcopy(sub.next_term),
            "billingType": "license",
            "billingCycle": sub.billing_cycle,
            "termDuration": sub.term_duration,
            "refundableQuantity": {
                "totalQuantity": sum(q for q, _ in refunds),
                "details": [{"quantity": q, "allowedUntilDateTime": _iso(u)} for q, u in refunds],
            },
            "isTrial": False,
            "orderId": sub.order_id,
            "actions": ["edit", "cancel"] if sub.status == "active" else [],
            "links": {"self": {"uri": path, "method": "GET", "headers": []}},
            "attributes": {"etag": sub.etag, "objectType": "Subscription"},
        }

    def _create_subscription(
        self,
        tenant: str,
        offer_id: str,
        quantity: int,
        *,
        subscription_id: str | None,
        status: str,
        term_duration: str,
        billing_cycle: str,
        purchased_at: datetime | None,
        refundable_quantity: int | None,
        cancellation_allowed_until: datetime | None,
        friendly_name: str | None,
        order_id: str | None,
    ) -> str:
        customer = self._customer(tenant)
        created = purchased_at or self.clock()
        until = cancellation_allowed_until or created + self.refund_window
        refundable = quantity if refundable_quantity is None else refundable_quantity
        term = TERMS.get(term_duration, relativedelta(months=1))
        sub = _Subscription(
            id=subscription_id or str(uuid.uuid4()),
            tenant=tenant,
            offer_id=offer_id,
            quantity=quantity,
            status=status,
            etag=_new_etag(),
            created=created,
            commitment_end=(created + term).date() - timedelta(days=1),
            cancellation_until=until,
            term_duration=term_duration,
            billing_cycle=billing_cycle,
            order_id=order_id,
            friendly_name=friendly_name or offer_id,
            refunds=[_Refund(refundable, until)] if refundable > 0 else [],
        )
        customer.subscriptions[sub.id] = sub
        return sub.id

    def _customer(self, tenant: str) -> _Customer:
        customer = self._customers.get(tenant)
        if customer is None:
            customer = self._customers[tenant] = _Customer(tenant)
        return customer

    # -- orders ----------------------------------------------------------------------------------

    def _create_order(self, request: RecordedRequest, tenant: str) -> tuple[FakeResponse, bool]:
        try:
            body = request.json()
        except ValueError:
            return _invalid("the body is not JSON"), False
        items = body.get("lineItems") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return _invalid("an order needs lineItems"), False
        for item in items:
            quantity = item.get("quantity") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not isinstance(item.get("offerId"), str):
                return _invalid("every line item needs an offerId"), False
            if isinstance(quantity, bool) or not isinstance(quantity, int):
                return _invalid("quantity must be a whole number"), False
            if not self.min_quantity <= quantity <= self.max_quantity:
                return _out_of_range(), False
        customer = self._customer(tenant)
        if self.require_mca and not customer.mca_accepted:
            return _error(
                403,
                13605,
                "Either a partner confirmation of the customer acceptance of the Microsoft "
                "Customer Agreement must be provided or the customer must accept the Microsoft "
                "Customer Agreement in the Microsoft Admin Center before you can complete this "
                "purchase",
                name="CustomerAgreementNotAccepted",
            ), False
        order_id = uuid.uuid4().hex
        billing_cycle = str(body.get("billingCycle") or "monthly")
        lines = []
        for number, item in enumerate(items):
            term = str(item.get("termDuration") or "P1M")
            subscription_id = self._create_subscription(
                tenant,
                item["offerId"],
                item["quantity"],
                subscription_id=None,
                status="active",
                term_duration=term,
                billing_cycle=billing_cycle,
                purchased_at=None,
                refundable_quantity=None,
                cancellation_allowed_until=None,
                friendly_name=item.get("friendlyName"),
                order_id=order_id,
            )
            lines.append(
                {
                    "lineItemNumber": item.get("lineItemNumber", number),
                    "offerId": item["offerId"],
                    "subscriptionId": subscription_id,
                    "termDuration": term,
                    "quantity": item["quantity"],
                    "links": {
                        "subscription": {
                            "uri": f"/v1/customers/{tenant}/subscriptions/{subscription_id}",
                            "method": "GET",
                            "headers": [],
                        }
                    },
                }
            )
        order = {
            "id": order_id,
            "referenceCustomerId": tenant,
            "alternateId": order_id[:12],
            "billingCycle": billing_cycle,
            "currencyCode": "USD",
            "lineItems": lines,
            "creationDate": _iso(self.clock()),
            "status": "completed",
            "links": {"self": {"uri": f"/v1/customers/{tenant}/orders/{order_id}"}},
            "attributes": {"objectType": "Order"},
        }
        customer.orders[order_id] = order
        return FakeResponse(201, copy.deepcopy(order)), True

    # -- agreements ------------------------------------------------------------------------------

    def _templates(self) -> dict[str, dict[str, Any]]:
        return {
            MCA: {
                "templateId": self.mca_template_id,
                "agreementType": MCA,
                "agreementLink": MCA_LINK,
                "versionRank": 0,
            },
            MCLOUD: {
                "templateId": self.mcloud_template_id,
                "agreementType": MCLOUD,
                "agreementLink": MCLOUD_LINK,
                "versionRank": 0,
            },
        }

    # -- customers ---------------------------------------------------------------------------

    def _render_customer(self, customer: _Customer) -> dict[str, Any]:
        return {
            "id": customer.tenant,
            "companyProfile": {
                "tenantId": customer.tenant,
                "domain": customer.domain,
                "companyName": customer.name,
            },
            "relationshipToPartner": "reseller",
            "attributes": {"objectType": "Customer"},
        }

    def _get_customer(self, tenant: str) -> FakeResponse:
        customer = self._customers.get(tenant)
        if customer is None:
            return _error(404, 600008, "The requested customer was not found.", name="NotFound")
        return FakeResponse(200, self._render_customer(customer))

    def _find_customers(self, request: RecordedRequest) -> FakeResponse:
        """``?filter={"Field": "Domain"|"CompanyName", "Value": …, "Operator": "starts_with"}``
        (the only operator Partner Center takes for customers) and an optional ``size``."""
        raw = (request.query.get("filter") or [""])[0]
        try:
            wanted = json.loads(raw) if raw else None
        except ValueError:
            wanted = None
        if wanted is not None and (
            not isinstance(wanted, dict)
            or wanted.get("Operator") != "starts_with"
            or wanted.get("Field") not in ("Domain", "CompanyName")
        ):
            return _invalid("filter must be a starts_with on Domain or CompanyName")
        value = str(wanted.get("Value", "")).lower() if wanted else ""
        field = "domain" if wanted is None or wanted.get("Field") == "Domain" else "name"
        found = [
            self._render_customer(c)
            for c in self._customers.values()
            if str(getattr(c, field)).lower().startswith(value)
        ]
        size = (request.query.get("size") or [""])[0]
        if size.isdigit() and int(size) > 0:
            found = found[: int(size)]
        return FakeResponse(200, _collection(found))

    def _list_templates(self, request: RecordedRequest) -> FakeResponse:
        wanted = (request.query.get("agreementType") or [MCLOUD])[0]  # Partner Center's default
        templates = self._templates()
        if wanted == "*":
            return FakeResponse(200, _collection(list(templates.values())))
        if wanted not in templates:
            return _invalid(f"unknown agreementType {wanted!r}")
        return FakeResponse(200, _collection([templates[wanted]]))

    def _customer_agreements(self, request: RecordedRequest, tenant: str) -> FakeResponse:
        wanted = (request.query.get("agreementType") or [MCLOUD])[0]
        customer = self._customers.get(tenant)
        items = [a for a in (customer.agreements if customer else []) if wanted in ("*", a["type"])]
        return FakeResponse(200, _collection(copy.deepcopy(items)))

    def _confirm_agreement(
        self, request: RecordedRequest, tenant: str
    ) -> tuple[FakeResponse, bool]:
        try:
            body = request.json()
        except ValueError:
            return _invalid("the body is not JSON"), False
        if not isinstance(body, dict):
            return _invalid("the body must be an Agreement"), False
        contact = body.get("primaryContact")
        if not isinstance(contact, dict) or not all(
            isinstance(contact.get(k), str) and contact[k].strip()
            for k in ("firstName", "lastName", "email")
        ):
            return _invalid("primaryContact needs firstName, lastName and email"), False
        if body.get("type") != MCA:
            return _invalid(f"type must be {MCA}"), False
        if body.get("templateId") != self.mca_template_id:
            return _invalid("templateId is not the current Microsoft Customer Agreement"), False
        agreed = body.get("dateAgreed")
        if not isinstance(agreed, str) or not re.fullmatch(
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z", agreed
        ):
            return _invalid(
                "dateAgreed must be a UTC date and time such as 2018-06-14T00:00:00.000Z"
            ), False
        customer = self._customer(tenant)
        person = {k: contact.get(k) for k in ("firstName", "lastName", "email", "phoneNumber")}
        for existing in customer.agreements:
            same_person = {k: existing["primaryContact"].get(k) for k in person} == person
            if same_person and existing["templateId"] == body["templateId"]:
                return _error(
                    409,
                    600061,
                    "A partner confirmed agreement already exists for the customer.",
                    name="PartnerConfirmedAgreementAlreadyExists",
                ), False
        agreement = {
            "primaryContact": {k: v for k, v in person.items() if v is not None},
            "templateId": body["templateId"],
            "dateAgreed": agreed,
            "type": MCA,
            "agreementLink": MCA_LINK,
            "userId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-partner-user:{tenant}")),
            "attributes": {"objectType": "Agreement"},
        }
        customer.agreements.append(agreement)
        customer.mca_accepted = True
        return FakeResponse(201, copy.deepcopy(agreement)), True


def _final(response: FakeResponse) -> bool:
    """Kept for replay: a success or a business answer, never a "not now"."""
    if response.drop or response.status in (401, 408, 429) or response.status >= 500:
        return False
    body = response.body
    return not (isinstance(body, dict) and str(body.get("code")) in TRANSIENT_CODES)


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _throttled(seconds: float) -> FakeResponse:
    wait = max(1, math.ceil(seconds))
    return FakeResponse(
        429,
        {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {wait} seconds."},
        {"Retry-After": str(wait)},
    )


def _invalid(why: str) -> FakeResponse:
    return _error(400, 800002, f"Invalid request input: {why}.", name="InvalidInput")


def _out_of_range() -> FakeResponse:
    return _error(
        400,
        2002,
        "Subscription quantity is not within minimum and maximum allowed quantity",
        name="QuantityOutOfRange",
    )


def _not_found(ref: str) -> FakeResponse:
    return _error(404, 20003, f"Subscription with id {ref} not found.", name="SubscriptionNotFound")
