"""Who is signed in on a request: the principal, the chosen account and the tenant scope.

:func:`init_app` resolves the brand from the Host header and scopes the request's session to
it (and to the chosen customer account), before any view runs; :func:`sign_in` and
:func:`sign_out` start and end a signed-in session.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, abort, g, request, session
from flask_login import current_user, login_user, logout_user
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload

from portal.core import db
from portal.core.extensions import login_manager
from portal.core.roles import Permission
from portal.core.scoping import Scope, set_scope
from portal.features.identity.models import Membership, StaffUser, User
from portal.features.identity.session_store import PRELOADED_USER, ServerSession
from portal.features.tenancy.branding.brand import request_host, resolve_brand
from portal.integrations.registry import integrations
from portal.web.access import (
    BRANDLESS_ENDPOINTS,
    CustomerPrincipal,
    StaffPrincipal,
    is_machine_request,
    may,
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
        (m for m in cast(User, principal.account).memberships if m.customer is not None),
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
    """Scope every request to its brand and signed-in account; give templates what they show
    of both."""
    app.before_request(_scope_request)

    @app.context_processor
    def _portal_context() -> dict[str, Any]:
        loaded = integrations()
        return {
            **loaded.template_context(),
            "plugin_nav_items": [i for i in loaded.nav_items() if may(i.permission)],
            "brand": g.get("brand"),
            "membership": g.get("membership"),
            "memberships": g.get("memberships", []),
            "customer": g.get("customer"),
            "Permission": Permission,
            "may": may,
        }
