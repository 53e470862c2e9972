"""Who may open which route: every view declares it, and the app refuses to start otherwise.

Each request first resolves its partner (from the host), then its signed-in person, then,
for a customer user, the account being worked on; the database session is scoped to exactly
that (see :mod:`portal.core.scoping`) before any view runs. That set-up is identity's
(:mod:`portal.features.identity.login`); here are the decorators and the principals, which know
an account only by the little they need of it (:class:`Account`), so web plumbing imports no
capability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, Protocol, TypeVar, cast

from flask import Flask, abort, current_app, g, redirect, request, url_for
from flask_login import AnonymousUserMixin, current_user

from portal.core.extensions import login_manager
from portal.core.roles import CustomerRole, Permission, StaffRole, customer_may, staff_may
from portal.web.csrf import csrf

F = TypeVar("F", bound=Callable[..., Any])
ACCESS_ATTR = "portal_access"
MACHINE_ATTR = "portal_machine_to_machine"
# endpoints served before a partner is known (assets need no brand)
BRANDLESS_ENDPOINTS = frozenset({"static"})


class Account(Protocol):
    """What a principal needs of the person behind it (a customer user or a staff member)."""

    @property
    def id(self) -> int: ...


class StaffAccount(Account, Protocol):
    @property
    def role(self) -> StaffRole: ...


class AccountRole(Protocol):
    """A membership of the chosen customer account, as far as permissions go."""

    @property
    def role(self) -> CustomerRole: ...


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

    def __init__(self, user: Account) -> None:
        self.account = user

    def get_id(self) -> str:
        return f"user:{self.account.id}"


class StaffPrincipal:
    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = True

    def __init__(self, staff: StaffAccount) -> None:
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
    that stored nothing, and security headers are still added. The view is exempt from CSRF
    protection: the signature is its authentication."""
    setattr(view, MACHINE_ATTR, True)
    csrf.exempt(view)
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
            membership: AccountRole | None = g.get("membership")
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
                return redirect(url_for("staff_auth.login", next=_here()))
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


def init_app(app: Flask) -> None:
    login_manager.anonymous_user = Anonymous


def may(permission: Permission) -> bool:
    """Whether the signed-in principal holds ``permission`` (in the chosen account, for a
    customer user)."""
    if isinstance(current_user, StaffPrincipal):
        return staff_may(current_user.account.role, permission)
    membership: AccountRole | None = g.get("membership")
    return membership is not None and customer_may(membership.role, permission)
