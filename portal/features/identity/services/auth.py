"""Signing in, and resetting a forgotten password by a single-use emailed link."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from flask import current_app, url_for
from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from portal.core.db import utcnow
from portal.core.errors import ServiceError
from portal.core.tokens import new_token, token_hash
from portal.features.identity import audit
from portal.features.identity.models import Membership, PasswordResetToken, StaffUser, User
from portal.features.identity.passwords import hash_password, verify_password
from portal.features.identity.rules import PasswordProblem, password_problems
from portal.features.identity.session_store import end_sessions_of
from portal.features.tenancy import mail
from portal.features.tenancy.models import Partner

Account = User | StaffUser


def normalise_email(email: str) -> str:
    return email.strip().lower()


def principal_of(account: Account) -> str:
    return f"{'staff' if isinstance(account, StaffUser) else 'user'}:{account.id}"


def find_account(db_session: Session, kind: type[Account], email: str) -> Account | None:
    """The active account with this email in the current partner.

    Partner-scoped only: whoever is signed in on this browser must not narrow the search.
    """
    found = db_session.scalars(
        select(kind)
        .where(func.lower(kind.email) == normalise_email(email), kind.active.is_(True))
        .execution_options(unscoped_customer=True)
    ).first()
    return cast(Account | None, found)


def authenticate(
    db_session: Session, partner: Partner, kind: type[Account], email: str, password: str
) -> Account | None:
    account = find_account(db_session, kind, email)
    if not verify_password(account.password_hash if account else None, password):
        audit.record(
            db_session,
            partner_id=partner.id,
            actor="anonymous",
            action="auth.login_failed",
            kind=kind.__tablename__,
        )
        db_session.commit()
        return None
    assert account is not None
    if isinstance(account, User) and not _has_membership(db_session, account):
        return None
    account.last_login_at = utcnow()
    audit.record(
        db_session, partner_id=partner.id, actor=principal_of(account), action="auth.login"
    )
    db_session.commit()
    return account


def _has_membership(db_session: Session, user: User) -> bool:
    return (
        db_session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.user_id == user.id)
            .execution_options(unscoped_customer=True)
        )
        != 0
    )


def password_messages(password: str, email: str) -> list[str]:
    texts = {
        PasswordProblem.TOO_SHORT: _("Use at least 12 characters."),
        PasswordProblem.TOO_LONG: _("Use at most 128 characters."),
        PasswordProblem.TOO_COMMON: _("This password is too common. Choose another."),
        PasswordProblem.CONTAINS_EMAIL: _("Do not use your email address in your password."),
    }
    return [texts[p] for p in password_problems(password, email)]


def request_reset(db_session: Session, partner: Partner, kind: type[Account], email: str) -> None:
    """Email a reset link if the account exists; say nothing either way (no probing)."""
    account = find_account(db_session, kind, email)
    if account is None:
        return
    token, digest = new_token()
    minutes = current_app.config["PORTAL_PASSWORD_RESET_MINUTES"]
    # a newer link makes the older ones useless
    owner = _token_owner(account)
    db_session.execute(
        update(PasswordResetToken)
        .where(owner, PasswordResetToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    db_session.add(
        PasswordResetToken(
            token_hash=digest,
            user_id=account.id if isinstance(account, User) else None,
            staff_user_id=account.id if isinstance(account, StaffUser) else None,
            expires_at=utcnow() + timedelta(minutes=minutes),
        )
    )
    audit.record(
        db_session,
        partner_id=partner.id,
        actor=principal_of(account),
        action="auth.reset_requested",
    )
    db_session.commit()
    endpoint = (
        "staff_auth.reset_password" if isinstance(account, StaffUser) else "auth.reset_password"
    )
    link = url_for(endpoint, token=token, _external=True)
    locale = account.locale if isinstance(account, User) else None
    message = mail.render_mail(
        "password_reset",
        partner,
        locale,
        to=account.email,
        name=account.name,
        link=link,
        minutes=minutes,
    )
    mail.send(message, partner)


def _token_owner(account: Account):  # type: ignore[no-untyped-def]
    if isinstance(account, StaffUser):
        return PasswordResetToken.staff_user_id == account.id
    return PasswordResetToken.user_id == account.id


def valid_reset_token(
    db_session: Session, kind: type[Account], token: str
) -> PasswordResetToken | None:
    row = db_session.scalars(
        select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash(token))
    ).first()
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return None
    owner_id = row.staff_user_id if kind is StaffUser else row.user_id
    if owner_id is None:
        return None
    # the partner scope of the session makes another brand's account invisible here
    account = db_session.scalars(
        select(kind).where(kind.id == owner_id).execution_options(unscoped_customer=True)
    ).first()
    return row if account is not None else None


def reset_password(
    db_session: Session, partner: Partner, kind: type[Account], token: str, password: str
) -> Account:
    row = valid_reset_token(db_session, kind, token)
    if row is None:
        raise ServiceError(_("This reset link is invalid or has expired. Ask for a new one."))
    owner_id = row.staff_user_id if kind is StaffUser else row.user_id
    account = cast(
        Account,
        db_session.scalars(
            select(kind).where(kind.id == owner_id).execution_options(unscoped_customer=True)
        ).one(),
    )
    problems = password_messages(password, account.email)
    if problems:
        raise ServiceError(" ".join(problems), field="password")
    # single use even under a double submit: only the request that flips used_at wins
    claimed = db_session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.id == row.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if claimed != 1:
        db_session.rollback()
        raise ServiceError(_("This reset link is invalid or has expired. Ask for a new one."))
    account.password_hash = hash_password(password)
    audit.record(
        db_session, partner_id=partner.id, actor=principal_of(account), action="auth.password_reset"
    )
    db_session.commit()
    end_sessions_of(current_app, principal_of(account))
    return account
