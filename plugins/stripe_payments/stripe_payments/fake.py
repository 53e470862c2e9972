"""A local Stripe for tests and benchmarks, driven through the real ``stripe`` SDK.

:class:`FakeStripe` serves, on ``http://127.0.0.1:<port>``, the part of the Stripe API the
adapter uses, speaking Stripe's wire protocol (``integration-apis.md`` §3, §7):

- ``Authorization: Bearer sk_…`` is required (401 otherwise); request bodies and query strings
  are form-encoded with bracket nesting (``metadata[invoice_ref]=7``, ``expand[0]=…``); answers
  are JSON; errors are ``{"error": {type, code, decline_code, message, param,
  payment_intent}}`` with Stripe's status codes (400, 402, 404, 409);
- **idempotency**: a POST's ``Idempotency-Key`` keeps the first answer (402 and 5xx included,
  once the request ran) and replays it for the same key and parameters
  (``Idempotent-Replayed: true``); the same key with different parameters is a 400
  ``idempotency_error``; a key still in flight is a 409. :meth:`effects` counts how many times
  requests with a key actually ran, so a test proves "one charge";
- objects: Customers, Checkout Sessions (``payment`` and ``setup`` mode), PaymentIntents (create,
  confirm at once, ``off_session``: 402 ``authentication_required`` / ``card_declined`` by the
  saved card), PaymentMethods (list by customer, detach), SetupIntents, Charges, Refunds, lists
  with ``created[gte]``, ``limit``, ``starting_after`` and ``has_more``, ``expand[]``;
- what a customer does on Stripe's hosted pages is a method call: :meth:`complete_checkout`
  (a test card that succeeds, is declined, or asks for 3-D Secure), :meth:`complete_setup`;
  and what happens later at Stripe: :meth:`refund`, :meth:`dispute`,
  :meth:`add_succeeded_payment` (a payment whose webhooks were lost);
- **events**: every change is an Event in :attr:`events` (nothing is sent by itself, so a test
  decides the order and the duplicates); :meth:`delivery` gives the body and headers signed
  exactly as Stripe signs them (``Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of
  "<ts>.<body>">``), :meth:`deliver` posts them;
- **faults** for the next matching requests (:meth:`inject`): latency, a 5xx before anything
  happens, a connection dropped before the request runs, or dropped *after* it ran and its
  answer was kept (the client cannot know; its retry with the same key gets the kept answer).

Amounts below Stripe's minimum charge (50 cents and the like) are refused as Stripe does.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from portal.testing.fake_server import FakeResponse, FakeServer, RecordedRequest

API_VERSION = "2026-06-24.dahlia"
WRITE_METHODS = frozenset({"POST", "DELETE"})
# Stripe's minimum charge per currency, in minor units (others: 50)
MINIMUM_CHARGE = {"gbp": 30, "jpy": 50, "huf": 17500, "mxn": 1000, "hkd": 400, "nok": 300}

# test payment methods: what the card does when charged
SUCCEED = "succeed"
DECLINE = "decline"
REQUIRE_AUTHENTICATION = "require_authentication"  # off-session: 402 authentication_required
AUTHENTICATE = "authenticate"  # on-session: 3-D Secure on the hosted page
TEST_CARDS: dict[str, tuple[str, str, str]] = {
    # behaviour: (test payment method token, brand, last 4)
    SUCCEED: ("pm_card_visa", "visa", "4242"),
    DECLINE: ("pm_card_chargeDeclined", "visa", "0002"),
    REQUIRE_AUTHENTICATION: ("pm_card_authenticationRequired", "visa", "3184"),
    AUTHENTICATE: ("pm_card_threeDSecureRequired", "visa", "3220"),
}
TOKENS = {token: behaviour for behaviour, (token, _, _) in TEST_CARDS.items()}


# -- faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injected fault, used by the next ``times`` requests it matches (``method``;
    ``path``: a substring of the path). Build them with the class methods."""

    kind: str
    seconds: float = 0.0
    status: int = 0
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
        return cls("latency", seconds=seconds, method=method, path=path)

    @classmethod
    def server_error(
        cls, status: int = 500, *, method: str | None = None, path: str | None = None
    ) -> Fault:
        """A 5xx before the request ran (nothing happened, nothing kept)."""
        return cls("server_error", status=status, method=method, path=path)

    @classmethod
    def drop_before(cls, *, method: str | None = None, path: str | None = None) -> Fault:
        """The connection closes before the request ran."""
        return cls("drop_before", method=method, path=path)

    @classmethod
    def drop_after_commit(cls, *, method: str | None = None, path: str | None = None) -> Fault:
        """The request ran and its answer was kept, then the connection closes unanswered."""
        return cls("drop_after", method=method, path=path)


class StripeError(Exception):
    """An error answer of the fake (becomes ``{"error": {...}}``)."""

    def __init__(self, status: int, type_: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type_, "message": message}
        self.body.update({k: v for k, v in fields.items() if v is not None})


def _missing(kind: str, ref: str, param: str = "id") -> StripeError:
    return StripeError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{ref}'",
        code="resource_missing",
        param=param,
    )


def _invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, "invalid_request_error", message, param=param, code=code)


@dataclass
class _Kept:
    fingerprint: str
    status: int
    body: dict[str, Any]


# -- the fake ----------------------------------------------------------------------------------


class FakeStripe:
    """A stateful fake Stripe on 127.0.0.1. Use as a context manager; point the SDK at
    :attr:`url` (``PORTAL_STRIPE_API_BASE``)."""

    def __init__(self, *, webhook_secret: str = "whsec_fake_stripe_test_secret") -> None:  # noqa: S107
        self.webhook_secret = webhook_secret
        self.server = FakeServer(self._handle)
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.methods: dict[str, dict[str, Any]] = {}
        self.setup_intents: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._behaviour: dict[str, str] = {}  # payment method id -> behaviour
        self._order: dict[str, int] = {}  # object id -> creation order (ties in `created`)
        self._numbers = itertools.count(1)
        self._kept: dict[str, _Kept] = {}
        self._in_flight: set[str] = set()
        self._effects: Counter[str] = Counter()
        self._faults: list[list[Any]] = []  # [fault, times left]
        self._lock = threading.RLock()
        self.clock: Callable[[], float] = time.time

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def errors(self) -> list[str]:
        return self.server.errors

    def start(self) -> FakeStripe:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what tests look at --------------------------------------------------------------------

    def effects(self, idempotency_key: str) -> int:
        """How many times a request with this key actually ran (1 means: once)."""
        with self._lock:
            return self._effects[idempotency_key]

    def inject(self, *faults: Fault, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([fault, times] for fault in faults)

    def events_of(self, type_: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["type"] == type_]

    def post_requests(self, path_part: str) -> int:
        return sum(
            1 for r in list(self.server.requests) if r.method == "POST" and path_part in r.path
        )

    # -- the hosted pages and what happens later at Stripe ----------------------------------------

    def complete_checkout(
        self, session_id: str, behaviour: str = SUCCEED, *, approve: bool = True
    ) -> dict[str, Any]:
        """The customer pays on the Checkout page with a test card (``SUCCEED``, ``DECLINE``,
        ``AUTHENTICATE`` then ``approve``s or not the 3-D Secure step). Returns the
        PaymentIntent."""
        with self._lock:
            session = self._get(self.sessions, session_id, "checkout.session")
            if session["status"] == "open" and self.clock() >= session["expires_at"]:
                self._expire_session(session_id)  # past its expires_at: Stripe expired it
            if session["mode"] != "payment" or session["status"] != "open":
                raise ValueError(f"session {session_id} is not an open payment session")
            intent = self.intents.get(session.get("payment_intent") or "")
            if intent is None:
                intent = self._new_intent(
                    amount=session["amount_total"],
                    currency=session["currency"],
                    customer=session.get("customer"),
                    metadata=dict(session["_intent_metadata"]),
                    description=session.get("_intent_description"),
                )
                session["payment_intent"] = intent["id"]
            method = self._method_for(TEST_CARDS[behaviour][0], session.get("customer"))
            intent["payment_method"] = method["id"]
            ok = behaviour == SUCCEED or (behaviour == AUTHENTICATE and approve)
            if ok:
                self._succeed(intent)
                session["status"] = "complete"
                session["payment_status"] = "paid"
                if session.get("_save_card") and session.get("customer"):
                    method["customer"] = session["customer"]
                self._emit("checkout.session.completed", session)
            else:
                code = (
                    "card_declined"
                    if behaviour == DECLINE
                    else "payment_intent_authentication_failure"
                )
                message = (
                    "Your card was declined."
                    if behaviour == DECLINE
                    else "We are unable to authenticate your payment method."
                )
                self._fail(
                    intent,
                    code,
                    message,
                    decline_code="generic_decline" if behaviour == DECLINE else None,
                )
            return copy.deepcopy(intent)

    def complete_setup(self, session_id: str, behaviour: str = SUCCEED) -> dict[str, Any]:
        """The customer saves a test card on the setup-mode Checkout page. Returns the card."""
        with self._lock:
            session = self._get(self.sessions, session_id, "checkout.session")
            if session["mode"] != "setup" or session["status"] != "open":
                raise ValueError(f"session {session_id} is not an open setup session")
            setup = self.setup_intents[session["setup_intent"]]
            method = self._method_for(TEST_CARDS[behaviour][0], session["customer"])
            method["customer"] = session["customer"]
            setup["payment_method"] = method["id"]
            setup["status"] = "succeeded"
            session["status"] = "complete"
            self._emit("setup_intent.succeeded", setup)
            self._emit("payment_method.attached", method)
            self._emit("checkout.session.completed", session)
            return copy.deepcopy(method)

    def expire_session(self, session_id: str) -> None:
        """The session reaches its ``expires_at`` (Stripe expires it by itself)."""
        with self._lock:
            self._expire_session(session_id)

    def _expire_session(self, session_id: str) -> dict[str, Any]:
        """``POST /v1/checkout/sessions/{id}/expire``: only an open session can be expired
        (Stripe answers 400 otherwise); it can never be completed afterwards."""
        session = self._get(self.sessions, session_id, "checkout.session")
        if session["status"] != "open":
            raise _invalid(
                f'Only Checkout Sessions with a status in ["open"] can be expired. '
                f'This Checkout Session has a status of "{session["status"]}".',
                code="checkout_session_not_open",
            )
        session["status"] = "expired"
        session["url"] = None
        self._emit("checkout.session.expired", session)
        return session

    def fail_refund(
        self, refund_id: str, reason: str = "expired_or_canceled_card"
    ) -> dict[str, Any]:
        """A succeeded refund the card network could not deliver: the refund becomes
        ``failed`` (with ``failure_reason``), the money is back on the balance, and Stripe sends
        ``charge.refund.updated``, ``refund.updated`` and ``refund.failed``."""
        with self._lock:
            refund = self._get(self.refunds, refund_id, "refund")
            if refund["status"] == "failed":
                raise ValueError(f"refund {refund_id} has failed already")
            refund.update(status="failed", failure_reason=reason)
            charge = self.charges[refund["charge"]]
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = False
            for type_ in ("charge.refund.updated", "refund.updated", "refund.failed"):
                self._emit(type_, refund)
            return copy.deepcopy(refund)

    def close_dispute(self, dispute_id: str, status: str) -> dict[str, Any]:
        """The bank decides a dispute: ``won`` (the money stays with the merchant) or ``lost``
        (it is gone for good): ``charge.dispute.closed``."""
        if status not in ("won", "lost", "warning_closed"):
            raise ValueError(f"a dispute closes as won, lost or warning_closed, not {status!r}")
        with self._lock:
            dispute = self._get(self.disputes, dispute_id, "dispute")
            dispute["status"] = status
            self._emit("charge.dispute.closed", dispute)
            return copy.deepcopy(dispute)

    def add_succeeded_payment(
        self,
        amount: int,
        currency: str = "usd",
        *,
        invoice_ref: str,
        customer_ref: str,
        created: int | None = None,
    ) -> dict[str, Any]:
        """A payment that succeeded at Stripe (its events are in :attr:`events`, undelivered)."""
        with self._lock:
            intent = self._new_intent(
                amount=amount,
                currency=currency.lower(),
                customer=None,
                metadata={"invoice_ref": invoice_ref, "customer_ref": customer_ref},
                created=created,
            )
            intent["payment_method"] = self._method_for("pm_card_visa", None)["id"]
            self._succeed(intent)
            return copy.deepcopy(intent)

    def refund(self, intent_id: str, amount: int | None = None) -> dict[str, Any]:
        """Stripe refunds (part of) a payment: a Refund, ``refund.created``, ``charge.refunded``."""
        with self._lock:
            return copy.deepcopy(self._refund({"payment_intent": intent_id, "amount": amount}))

    def dispute(self, intent_id: str, reason: str = "fraudulent") -> dict[str, Any]:
        """The card holder's bank disputes a payment: ``charge.dispute.created``."""
        with self._lock:
            intent = self._get(self.intents, intent_id, "payment_intent")
            charge = self.charges[intent["latest_charge"]]
            dispute = self._store(
                self.disputes,
                "dp",
                {
                    "object": "dispute",
                    # a chargeback is for what the card holder still paid (a refunded part
                    # came back to them already)
                    "amount": charge["amount"] - charge["amount_refunded"],
                    "is_charge_refundable": False,
                    "currency": charge["currency"],
                    "charge": charge["id"],
                    "payment_intent": intent_id,
                    "reason": reason,
                    "status": "needs_response",
                },
            )
            charge["disputed"] = True
            self._emit("charge.dispute.created", dispute)
            return copy.deepcopy(dispute)

    # -- signed deliveries ---------------------------------------------------------------------

    def signature(
        self, payload: bytes, secret: str | None = None, timestamp: int | None = None
    ) -> str:
        """The ``Stripe-Signature`` value Stripe would send with ``payload``."""
        return signature_header(
            payload, secret or self.webhook_secret, timestamp or int(self.clock())
        )

    def delivery(
        self, event: Mapping[str, Any], secret: str | None = None, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """A webhook delivery of ``event``: its body and headers, signed."""
        body = json.dumps(event, separators=(",", ":")).encode()
        return body, {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": self.signature(body, secret, timestamp),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }

    def deliver(self, url: str, events: Iterable[Mapping[str, Any]] | None = None) -> list[int]:
        """POST each event (default: all so far), signed, to ``url``; the status codes."""
        statuses = []
        for event in list(events if events is not None else self.events):
            body, headers = self.delivery(event)
            if not url.startswith("http://127.0.0.1:"):
                raise ValueError("the fake delivers to 127.0.0.1 only")
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    statuses.append(int(answer.status))
            except urllib.error.HTTPError as error:
                statuses.append(int(error.code))
        return statuses

    # -- HTTP ------------------------------------------------------------------------------------

    def _handle(self, request: RecordedRequest) -> FakeResponse:
        fault = self._take_fault(request.method, request.path)
        delay = fault.seconds if fault is not None and fault.kind == "latency" else 0.0
        if fault is not None and fault.kind == "drop_before":
            return FakeResponse(drop=True)
        if fault is not None and fault.kind == "server_error":
            return _json(fault.status, {"error": {"type": "api_error", "message": "Fake outage"}})
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer sk_") and not auth.startswith("Bearer rk_"):
            return _json(
                401,
                {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}},
            )
        if request.method == "GET":
            params = _nested(parse_qsl(_query_string(request), keep_blank_values=True))
        else:
            params = _nested(parse_qsl(request.body.decode(), keep_blank_values=True))
        key = request.headers.get("Idempotency-Key")
        if request.method not in WRITE_METHODS or not key:
            status, body = self._run(request.method, request.path, params)
            return _json(status, body, delay=delay)
        fingerprint = hashlib.sha256(
            json.dumps([request.method, request.path, params], sort_keys=True).encode()
        ).hexdigest()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                if kept.fingerprint != fingerprint:
                    return _json(
                        400,
                        {
                            "error": {
                                "type": "idempotency_error",
                                "message": "Keys for idempotent requests can only be used "
                                "with the same parameters they were first used with. Try using "
                                f"a key other than '{key}' if you meant to execute a different "
                                "request.",
                            }
                        },
                    )
                return _json(kept.status, kept.body, {"Idempotent-Replayed": "true"}, delay=delay)
            if key in self._in_flight:
                return _json(
                    409,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "code": "idempotency_key_in_use",
                            "message": "There is currently another in-progress request using this "
                            "Idempotency-Key. Please try again later.",
                        }
                    },
                )
            self._in_flight.add(key)
        try:
            status, body = self._run(request.method, request.path, params)
            with self._lock:
                # a request refused before it ran (4xx validation) is not kept: fix and retry
                if status in (200, 402) or status >= 500:
                    self._kept[key] = _Kept(fingerprint, status, body)
                    self._effects[key] += 1
        finally:
            with self._lock:
                self._in_flight.discard(key)
        if fault is not None and fault.kind == "drop_after":
            return FakeResponse(drop=True)
        return _json(status, body, delay=delay)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault, left = entry
                if left > 0 and fault.matches(method, path):
                    entry[1] = left - 1
                    return fault  # type: ignore[no-any-return]
            return None

    def _run(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            return 404, {
                "error": {
                    "type": "invalid_request_error",
                    "message": f"Unrecognized request URL ({method}: {path})",
                }
            }
        try:
            with self._lock:
                return 200, self._route(method, parts[1:], params)
        except StripeError as error:
            return error.status, {"error": error.body}

    def _route(self, method: str, parts: list[str], params: dict[str, Any]) -> dict[str, Any]:
        route = (method, *[p if i % 2 == 0 else "*" for i, p in enumerate(parts)])
        expand = _as_list(params.pop("expand", []))
        if parts[:2] == ["checkout", "sessions"]:
            if method == "POST" and len(parts) == 2:
                return self._out(self._create_session(params))
            if method == "GET" and len(parts) == 3:
                return self._out(self._get(self.sessions, parts[2], "checkout.session"), expand)
            if method == "POST" and len(parts) == 4 and parts[3] == "expire":
                return self._out(self._expire_session(parts[2]))
        if route == ("POST", "customers"):
            return self._out(self._create_customer(params))
        if route == ("GET", "customers", "*"):
            return self._out(self._get(self.customers, parts[1], "customer"))
        if route == ("GET", "customers", "*", "payment_methods"):
            self._get(self.customers, parts[1], "customer")
            found = [m for m in self.methods.values() if m["customer"] == parts[1]]
            return self._list(found, params, f"/v1/customers/{parts[1]}/payment_methods")
        if route == ("POST", "payment_intents"):
            return self._out(self._create_intent(params))
        if route == ("GET", "payment_intents"):
            found = list(self.intents.values())
            return self._list(found, params, "/v1/payment_intents")
        if route == ("GET", "payment_intents", "*"):
            return self._out(self._get(self.intents, parts[1], "payment_intent"), expand)
        if route == ("GET", "payment_methods", "*"):
            return self._out(self._get(self.methods, parts[1], "payment_method"))
        if route == ("POST", "payment_methods", "*", "detach"):
            pm = self._get(self.methods, parts[1], "payment_method")
            if not pm["customer"]:
                raise _invalid(
                    f"The payment method {parts[1]} is not attached to a customer",
                    code="payment_method_unexpected_state",
                )
            pm["customer"] = None
            self._emit("payment_method.detached", pm)
            return self._out(pm)
        if route == ("GET", "setup_intents", "*"):
            return self._out(self._get(self.setup_intents, parts[1], "setup_intent"), expand)
        if route == ("POST", "refunds"):
            return self._out(self._refund(params))
        if route == ("GET", "refunds"):
            found = list(self.refunds.values())
            if params.get("payment_intent"):
                found = [r for r in found if r["payment_intent"] == params["payment_intent"]]
            return self._list(found, params, "/v1/refunds")
        raise _invalid(f"Unrecognized request URL ({method}: /v1/{'/'.join(parts)})")

    # -- objects -----------------------------------------------------------------------------

    def _store(
        self,
        table: dict[str, dict[str, Any]],
        prefix: str,
        obj: dict[str, Any],
        created: int | None = None,
    ) -> dict[str, Any]:
        obj_id = f"{prefix}_{'test_' if prefix == 'cs' else ''}{secrets.token_hex(12)}"
        obj = {"id": obj_id, **obj, "created": created or int(self.clock()), "livemode": False}
        obj.setdefault("metadata", {})
        table[obj_id] = obj
        self._order[obj_id] = next(self._numbers)
        return obj

    def _get(self, table: dict[str, dict[str, Any]], ref: str, kind: str) -> dict[str, Any]:
        found = table.get(ref)
        if found is None:
            raise _missing(kind, ref)
        return found

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._store(
            self.customers,
            "cus",
            {
                "object": "customer",
                "name": params.get("name"),
                "email": params.get("email"),
                "metadata": _metadata(params),
                "invoice_settings": {"default_payment_method": None},
            },
        )

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if mode not in ("payment", "setup"):
            raise _invalid("Invalid mode: must be one of payment, setup or subscription", "mode")
        for name in ("success_url",):
            if not params.get(name):
                raise _invalid(f"Missing required param: {name}.", name)
        customer = params.get("customer")
        if customer:
            self._get(self.customers, customer, "customer")
        session: dict[str, Any] = {
            "object": "checkout.session",
            "mode": mode,
            "status": "open",
            "payment_status": "unpaid",
            "customer": customer or None,
            "success_url": params["success_url"],
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "metadata": _metadata(params),
            "payment_intent": None,
            "setup_intent": None,
            "expires_at": self._expires_at(params),
        }
        if mode == "payment":
            items = _as_list(params.get("line_items"))
            if not items:
                raise _invalid("You must specify line_items in payment mode.", "line_items")
            currencies = set()
            total = 0
            for number, item in enumerate(items):
                data = item.get("price_data") or {}
                amount = _amount(
                    data.get("unit_amount"), f"line_items[{number}][price_data][unit_amount]"
                )
                quantity = _amount(item.get("quantity", "1"), f"line_items[{number}][quantity]")
                currencies.add(str(data.get("currency") or "").lower())
                total += amount * quantity
            if len(currencies) != 1 or not all(len(c) == 3 and c.isalpha() for c in currencies):
                raise _invalid("Invalid currency", "line_items[0][price_data][currency]")
            currency = currencies.pop()
            _check_charge(total, currency)
            intent_data = params.get("payment_intent_data") or {}
            session.update(
                amount_total=total,
                currency=currency,
                _intent_metadata=_metadata(intent_data),
                _intent_description=intent_data.get("description"),
                _save_card=intent_data.get("setup_future_usage") == "off_session",
            )
            if params.get("customer_creation") == "always" and not customer:
                session["customer"] = self._create_customer({"metadata": session["metadata"]})["id"]
        else:
            if not customer:
                raise _invalid("A customer is required in setup mode.", "customer")
            setup_data = params.get("setup_intent_data") or {}
            setup = self._store(
                self.setup_intents,
                "seti",
                {
                    "object": "setup_intent",
                    "customer": customer,
                    "status": "requires_payment_method",
                    "usage": "off_session",
                    "payment_method": None,
                    "metadata": _metadata(setup_data),
                },
            )
            session.update(amount_total=None, currency=None, setup_intent=setup["id"])
        stored = self._store(self.sessions, "cs", session)
        stored["url"] = f"https://checkout.stripe.com/c/pay/{stored['id']}"
        return stored

    def _expires_at(self, params: Mapping[str, Any]) -> int:
        """``expires_at``: 30 minutes to 24 hours after creation (Stripe's range), by default
        24 hours."""
        now = int(self.clock())
        raw = params.get("expires_at")
        if raw is None or raw == "":
            return now + 24 * 3600
        when = _amount(raw, "expires_at")
        if not now + 30 * 60 <= when <= now + 24 * 3600:
            raise _invalid(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                "Checkout Session creation.",
                "expires_at",
            )
        return when

    def _new_intent(
        self,
        *,
        amount: int,
        currency: str,
        customer: str | None,
        metadata: dict[str, str],
        description: str | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        intent = self._store(
            self.intents,
            "pi",
            {
                "object": "payment_intent",
                "amount": amount,
                "amount_received": 0,
                "currency": currency,
                "customer": customer,
                "description": description,
                "metadata": metadata,
                "payment_method": None,
                "latest_charge": None,
                "last_payment_error": None,
                "next_action": None,
                "cancellation_reason": None,
                "status": "requires_payment_method",
            },
            created=created,
        )
        intent["client_secret"] = f"{intent['id']}_secret_{secrets.token_hex(8)}"
        self._emit("payment_intent.created", intent)
        return intent

    def _create_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = _amount(params.get("amount"), "amount")
        currency = str(params.get("currency") or "").lower()
        if len(currency) != 3 or not currency.isalpha():
            raise _invalid("Invalid currency", "currency")
        _check_charge(amount, currency)
        customer = params.get("customer") or None
        if customer:
            self._get(self.customers, customer, "customer")
        method_ref = params.get("payment_method")
        method = None
        if method_ref:
            method = self._method_for(method_ref, customer, attached_only=True)
        confirm = params.get("confirm") == "true"
        off_session = params.get("off_session") in ("true", "one_off", "recurring")
        if off_session and not confirm:
            raise _invalid("off_session can only be used with confirm=true", "off_session")
        intent = self._new_intent(
            amount=amount,
            currency=currency,
            customer=customer,
            metadata=_metadata(params),
            description=params.get("description"),
        )
        if method is not None:
            intent["payment_method"] = method["id"]
            intent["status"] = "requires_confirmation"
        if not confirm:
            return intent
        if method is None:
            raise _invalid("You must provide a payment_method to confirm", "payment_method")
        behaviour = self._behaviour.get(method["id"], SUCCEED)
        if behaviour == SUCCEED:
            self._succeed(intent)
            return intent
        if behaviour == AUTHENTICATE and not off_session:
            intent["status"] = "requires_action"
            intent["next_action"] = {"type": "use_stripe_sdk", "use_stripe_sdk": {}}
            self._emit("payment_intent.requires_action", intent)
            return intent
        if behaviour in (REQUIRE_AUTHENTICATION, AUTHENTICATE):
            code, decline, message = (
                "authentication_required",
                "authentication_required",
                "Your card was declined. This transaction requires authentication.",
            )
        else:
            code, decline, message = "card_declined", "generic_decline", "Your card was declined."
        self._fail(intent, code, message, decline_code=decline)
        raise StripeError(
            402,
            "card_error",
            message,
            code=code,
            decline_code=decline,
            payment_intent=copy.deepcopy(intent),
            payment_method=copy.deepcopy(method),
        )

    def _method_for(
        self, ref: str, customer: str | None, attached_only: bool = False
    ) -> dict[str, Any]:
        """A test token (``pm_card_visa``) becomes a new PaymentMethod, as Stripe does; a
        saved one is checked against the customer."""
        if ref in TOKENS:
            behaviour = TOKENS[ref]
            _, brand, last4 = TEST_CARDS[behaviour]
            method = self._store(
                self.methods,
                "pm",
                {
                    "object": "payment_method",
                    "type": "card",
                    "customer": None,
                    "card": {
                        "brand": brand,
                        "last4": last4,
                        "exp_month": 12,
                        "exp_year": 2034,
                        "country": "US",
                        "funding": "credit",
                    },
                },
            )
            self._behaviour[method["id"]] = behaviour
            return method
        method = self._get(self.methods, ref, "payment_method")
        if attached_only and method["customer"] != customer:
            raise _invalid(
                f"The provided PaymentMethod {ref} was previously used with a PaymentIntent "
                "without Customer attachment, shared with a connected account without "
                "Customer attachment, or was detached from a Customer. It may not be used "
                "again.",
                "payment_method",
            )
        return method

    def _succeed(self, intent: dict[str, Any]) -> None:
        charge = self._store(
            self.charges,
            "ch",
            {
                "object": "charge",
                "amount": intent["amount"],
                "amount_captured": intent["amount"],
                "amount_refunded": 0,
                "currency": intent["currency"],
                "customer": intent["customer"],
                "payment_intent": intent["id"],
                "payment_method": intent["payment_method"],
                "metadata": dict(intent["metadata"]),
                "paid": True,
                "captured": True,
                "refunded": False,
                "disputed": False,
                "status": "succeeded",
            },
        )
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge=charge["id"],
            last_payment_error=None,
            next_action=None,
        )
        self._emit("charge.succeeded", charge)
        self._emit("payment_intent.succeeded", intent)

    def _fail(
        self, intent: dict[str, Any], code: str, message: str, *, decline_code: str | None = None
    ) -> None:
        error: dict[str, Any] = {"type": "card_error", "code": code, "message": message}
        if decline_code:
            error["decline_code"] = decline_code
        intent.update(status="requires_payment_method", last_payment_error=error)
        self._emit("payment_intent.payment_failed", intent)

    def _refund(self, params: Mapping[str, Any]) -> dict[str, Any]:
        ref = params.get("payment_intent") or ""
        intent = self._get(self.intents, str(ref), "payment_intent")
        if intent["status"] != "succeeded":
            raise _invalid(
                "This PaymentIntent does not have a successful charge to refund.", "payment_intent"
            )
        charge = self.charges[intent["latest_charge"]]
        if any(
            d["charge"] == charge["id"] and d["status"] != "won" for d in self.disputes.values()
        ):
            # a charged-back payment cannot be refunded as well (the bank returns the money)
            raise _invalid(
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                "charge",
                code="charge_disputed",
            )
        left = charge["amount"] - charge["amount_refunded"]
        amount = _amount(params["amount"], "amount") if params.get("amount") is not None else left
        if amount > left:
            raise _invalid(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                "amount",
                code="amount_too_large",
            )
        refund = self._store(
            self.refunds,
            "re",
            {
                "object": "refund",
                "amount": amount,
                "currency": charge["currency"],
                "charge": charge["id"],
                "payment_intent": intent["id"],
                "status": "succeeded",
                "reason": params.get("reason"),
            },
        )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._emit("refund.created", refund)
        self._emit("charge.refunded", self._charge_with_refunds(charge))
        return refund

    def _charge_with_refunds(self, charge: dict[str, Any]) -> dict[str, Any]:
        refunds = sorted(
            (r for r in self.refunds.values() if r["charge"] == charge["id"]),
            key=lambda r: -self._order[r["id"]],
        )
        return {
            **charge,
            "refunds": {
                "object": "list",
                "data": refunds,
                "has_more": False,
                "url": f"/v1/charges/{charge['id']}/refunds",
            },
        }

    def _emit(self, type_: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        event = {
            "id": f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": API_VERSION,
            "created": int(self.clock()),
            "type": type_,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": _public(copy.deepcopy(dict(obj)))},
        }
        self.events.append(event)
        return event

    def _out(self, obj: dict[str, Any], expand: list[str] | None = None) -> dict[str, Any]:
        out = _public(copy.deepcopy(obj))
        for path in expand or []:
            self._expand(out, path.split("."))
        return out

    def _expand(self, obj: dict[str, Any], path: list[str]) -> None:
        name = path[0]
        value = obj.get(name)
        if isinstance(value, str):
            table = {
                "payment_intent": self.intents,
                "setup_intent": self.setup_intents,
                "payment_method": self.methods,
                "latest_charge": self.charges,
                "customer": self.customers,
            }.get(name)
            if table is None or value not in table:
                return
            value = _public(copy.deepcopy(table[value]))
            obj[name] = value
        if isinstance(value, dict) and len(path) > 1:
            self._expand(value, path[1:])

    def _list(
        self, objects: list[dict[str, Any]], params: dict[str, Any], url: str
    ) -> dict[str, Any]:
        created = params.get("created")
        if isinstance(created, dict):
            for op, test in (
                ("gte", int.__ge__),
                ("gt", int.__gt__),
                ("lte", int.__le__),
                ("lt", int.__lt__),
            ):
                if op in created:
                    bound = _amount(created[op], f"created[{op}]", zero_ok=True)
                    objects = [o for o in objects if test(o["created"], bound)]
        objects = sorted(objects, key=lambda o: (-o["created"], -self._order[o["id"]]))
        after = params.get("starting_after")
        if after:
            ids = [o["id"] for o in objects]
            if after not in ids:
                raise _invalid(f"No such object: '{after}'", "starting_after")
            objects = objects[ids.index(after) + 1 :]
        limit = _amount(params.get("limit", "10"), "limit")
        if not 1 <= limit <= 100:
            raise _invalid("Invalid limit: must be between 1 and 100", "limit")
        page = objects[:limit]
        return {
            "object": "list",
            "data": [_public(copy.deepcopy(o)) for o in page],
            "has_more": len(objects) > limit,
            "url": url,
        }


# -- wire helpers ----------------------------------------------------------------------------------


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>">``: exactly Stripe's scheme."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _json(
    status: int,
    body: dict[str, Any],
    headers: Mapping[str, str] | None = None,
    *,
    delay: float = 0.0,
) -> FakeResponse:
    out = {"Request-Id": f"req_{secrets.token_hex(7)}", "Stripe-Version": API_VERSION}
    out.update(headers or {})
    return FakeResponse(status, body, out, delay=delay)


def _query_string(request: RecordedRequest) -> str:
    from urllib.parse import urlencode

    return urlencode([(k, v) for k, values in request.query.items() for v in values])


def _nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][0]=x`` form pairs as nested dicts; all-digit keys become lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        names = key.replace("]", "").split("[")
        node = root
        for name in names[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise _invalid(f"Invalid parameter: {key}")
        node[names[-1]] = value
    converted: dict[str, Any] = _lists(root)
    return converted


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _as_list(value: Any) -> list[Any]:
    if value in (None, ""):
        return []
    return value if isinstance(value, list) else [value]


def _metadata(params: Mapping[str, Any]) -> dict[str, str]:
    metadata = params.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _invalid("Invalid metadata", "metadata")
    for key, value in metadata.items():
        if len(key) > 40 or len(str(value)) > 500:
            raise _invalid("Metadata keys are at most 40 characters, values 500", "metadata")
    return {str(k): str(v) for k, v in metadata.items()}


def _amount(raw: Any, param: str, *, zero_ok: bool = False) -> int:
    text = str(raw if raw is not None else "")
    if not text.lstrip("-").isdigit():
        raise _invalid(f"Invalid integer: {text}", param)
    value = int(text)
    if value < 0 or (value == 0 and not zero_ok and param != "limit"):
        raise _invalid(f"Invalid positive integer: {text}", param)
    return value


def _check_charge(amount: int, currency: str) -> None:
    minimum = MINIMUM_CHARGE.get(currency, 50)
    if amount < minimum:
        raise _invalid(
            f"Amount must be at least {minimum} {currency} minor units",
            "amount",
            code="amount_too_small",
        )
    if amount > 99_999_999:
        raise _invalid("Amount must be no more than 99999999", "amount", code="amount_too_large")


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the fake's own bookkeeping (keys starting with ``_``)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}
