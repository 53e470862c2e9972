"""Who may open which route: every view declares it, and the app refuses to start otherwise.

Each request first resolves its partner (from the host), then its signed-in person, then,
for a customer user, the account being worked on; the database session is scoped to exactly
that (see :mod:`portal.scoping`) before any view runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from flask_login import AnonymousUserMixin, current_user, login_user, logout_user
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload

from portal import db
from portal.branding.brand import request_host, resolve_brand
from portal.domain.roles import Permission, customer_may, staff_may
from portal.extensions import login_manager
from portal.models import Membership, StaffUser, User
from portal.scoping import Scope, set_scope
from portal.web.session_store import PRELOADED_USER, ServerSession

F = TypeVar("F", bound=Callable[..., Any])
ACCESS_ATTR = "portal_access"
MACHINE_ATTR = "portal_machine_to_machine"
# endpoints served before a partner is known (assets need no brand)
BRANDLESS_ENDPOINTS = frozenset({"static"})


@dataclass(frozen=True)
class Access:
    """``kind`` is "public", "customer" or "staff"; ``permission`` is checked for the latter two."""

    kind: str
    permission: Permission | None = None


class CustomerPrincipal:
    """A signed-in customer user, as Flask-Login sees them."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = False

    def __init__(self, user: User) -> None:
        self.account = user

    def get_id(self) -> str:
        return f"user:{self.account.id}"


class StaffPrincipal:
    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = True

    def __init__(self, staff: StaffUser) -> None:
        self.account = staff

    def get_id(self) -> str:
        return f"staff:{self.account.id}"


class Anonymous(AnonymousUserMixin):  # type: ignore[misc]
    is_staff = False
    account = None


def _declare(view: F, access: Access) -> F:
    setattr(view, ACCESS_ATTR, access)
    return view


def public(view: F) -> F:
    """Open to anyone (sign-in pages, assets). Still partner-scoped."""
    return _declare(view, Access("public"))


def machine_to_machine(view: F) -> F:
    """Mark a public view whose caller is a machine that signs its requests (a gateway's
    webhook): it has no cookie, no person and no brand, and the view authenticates the request
    itself and takes the tenant from what was signed. The request hooks that exist for people
    skip it: resolving the partner from the host and the signed-in person (so nothing is
    scoped to the host's partner: the view must not use the request's session), and the rate
    limiter's bookkeeping. The session store never writes a row or a cookie for a request
    that stored nothing, and security headers are still added."""
    setattr(view, MACHINE_ATTR, True)
    return view


def is_machine_request() -> bool:
    """Whether the current request was routed to a :func:`machine_to_machine` view."""
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, MACHINE_ATTR, False))


def customer_required(permission: Permission) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not isinstance(current_user, CustomerPrincipal):
                return redirect(url_for("auth.login", next=_here()))
            membership: Membership | None = g.get("membership")
            if membership is None or not customer_may(membership.role, permission):
                abort(403)
            return view(*args, **kwargs)

        return _declare(cast(F, wrapped), Access("customer", permission))

    return decorator


def staff_required(permission: Permission) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not isinstance(current_user, StaffPrincipal):
                return redirect(url_for("staff.login", next=_here()))
            if not staff_may(current_user.account.role, permission):
                abort(403)
            return view(*args, **kwargs)

        return _declare(cast(F, wrapped), Access("staff", permission))

    return decorator


def _here() -> str:
    return request.full_path.rstrip("?")


def access_of(view: Callable[..., Any]) -> Access | None:
    return cast(Access | None, getattr(view, ACCESS_ATTR, None))


def check_every_route_declares_access(app: Flask) -> None:
    missing = [
        endpoint
        for endpoint, view in app.view_functions.items()
        if endpoint not in BRANDLESS_ENDPOINTS and access_of(view) is None
    ]
    if missing:
        raise RuntimeError(
            "Every route must declare who may use it (public, customer_required or "
            f"staff_required); these do not: {', '.join(sorted(missing))}"
        )


# Built once: these run on every signed-in request. The person and every account they belong
# to come back in one round trip.
USER_WITH_ACCOUNTS = (
    select(User)
    .where(User.id == bindparam("id"), User.active.is_(True))
    .options(joinedload(User.memberships).joinedload(Membership.customer))
)
ACTIVE_STAFF = select(StaffUser).where(StaffUser.id == bindparam("id"), StaffUser.active.is_(True))


@login_manager.user_loader  # type: ignore[untyped-decorator]
def _load_principal(principal_id: str) -> CustomerPrincipal | StaffPrincipal | None:
    kind, _, raw_id = principal_id.partition(":")
    if not raw_id.isdigit():
        return None
    if kind == "user":
        user = _preloaded_user(int(raw_id))
        if user is None:
            user = db.session.scalars(USER_WITH_ACCOUNTS, {"id": int(raw_id)}).unique().first()
        return CustomerPrincipal(user) if user else None
    if kind == "staff":
        staff = db.session.scalars(ACTIVE_STAFF, {"id": int(raw_id)}).first()
        return StaffPrincipal(staff) if staff else None
    return None


def _preloaded_user(user_id: int) -> User | None:
    """The person the session store loaded with the session, if it is this brand's.

    That query ran before the partner was known, so the partner scope did not filter it:
    check here what the scope would have.
    """
    user: User | None = g.get(PRELOADED_USER)
    brand = g.get("brand")
    if user is None or brand is None or user.id != user_id or user.partner_id != brand.id:
        return None
    return user


def _scope_request() -> None:
    if request.endpoint in BRANDLESS_ENDPOINTS or is_machine_request():
        return
    brand = resolve_brand(db.session, request_host())
    if brand is None:
        abort(404)
    g.brand = brand
    set_scope(db.session, Scope(partner_id=brand.id))
    principal = current_user._get_current_object()
    if isinstance(principal, CustomerPrincipal):
        _choose_account(principal, brand.id)


def _choose_account(principal: CustomerPrincipal, partner_id: int) -> None:
    # loaded with the user, under this partner's scope only
    memberships = sorted(
        (m for m in principal.account.memberships if m.customer is not None),
        key=lambda m: m.customer.name.lower(),
    )
    if not memberships:
        # removed from every account: the session no longer means anything
        logout_user()
        cast(ServerSession, session).end()
        return
    wanted = session.get("customer_id")
    chosen = next((m for m in memberships if m.customer_id == wanted), memberships[0])
    g.memberships = memberships
    g.membership = chosen
    g.customer = chosen.customer
    set_scope(db.session, Scope(partner_id=partner_id, customer_id=chosen.customer_id))


def sign_in(principal: CustomerPrincipal | StaffPrincipal) -> None:
    """Start a signed-in session under a brand-new id (no fixation)."""
    locale = session.get("locale")
    session.clear()
    if locale:
        session["locale"] = locale
    login_user(principal)
    cast(ServerSession, session).rotate()


def sign_out() -> None:
    """End the signed-in session for good; only the chosen language carries on."""
    locale = session.get("locale")
    logout_user()
    cast(ServerSession, session).end()
    if locale:
        session["locale"] = locale


def init_app(app: Flask) -> None:
    login_manager.anonymous_user = Anonymous
    app.before_request(_scope_request)

    @app.context_processor
    def _portal_context() -> dict[str, Any]:
        from portal.integrations.registry import integrations

        loaded = integrations()
        return {
            **loaded.template_context(),
            "plugin_nav_items": [i for i in loaded.nav_items() if _may(i.permission)],
            "brand": g.get("brand"),
            "membership": g.get("membership"),
            "memberships": g.get("memberships", []),
            "customer": g.get("customer"),
            "Permission": Permission,
            "may": _may,
        }


def _may(permission: Permission) -> bool:
    if isinstance(current_user, StaffPrincipal):
        return staff_may(current_user.account.role, permission)
    membership: Membership | None = g.get("membership")
    return membership is not None and customer_may(membership.role, permission)
