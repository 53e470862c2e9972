"""The people of a customer account: invitations, roles, removal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import ColumnElement, Integer, Select, and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from portal.core.db import UTCDateTime, utcnow
from portal.core.errors import ServiceError
from portal.core.roles import CustomerRole, StaffRole
from portal.core.tokens import new_token, token_hash
from portal.features.identity import audit
from portal.features.identity.models import Invitation, Membership, StaffUser, User
from portal.features.identity.passwords import hash_password, verify_password
from portal.features.identity.services.auth import normalise_email, password_messages
from portal.features.tenancy import mail
from portal.features.tenancy.models import Customer, Partner


def invite(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    email: str,
    role: CustomerRole,
    invited_by: str,
    inviter_name: str,
) -> Invitation:
    email = normalise_email(email)
    already = db_session.scalar(
        select(func.count())
        .select_from(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.customer_id == customer.id, func.lower(User.email) == email)
    )
    if already:
        raise ServiceError(_("%(email)s is already a user of this account.", email=email), "email")
    now = utcnow()
    # one live invitation per address: a new one replaces the old link
    db_session.execute(
        update(Invitation)
        .where(
            Invitation.customer_id == customer.id,
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    token, digest = new_token()
    days = current_app.config["PORTAL_INVITATION_DAYS"]
    invitation = Invitation(
        customer_id=customer.id,
        email=email,
        role=role,
        token_hash=digest,
        invited_by=invited_by,
        expires_at=now + timedelta(days=days),
    )
    db_session.add(invitation)
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=invited_by,
        action="people.invited",
        email=email,
        role=role.value,
    )
    db_session.commit()
    link = url_for("auth.accept_invitation", token=token, _external=True)
    # the invitee's language is unknown: write in the one the inviter is using
    message = mail.render_mail(
        "invitation",
        partner,
        str(get_locale() or "en"),
        to=email,
        customer=customer,
        inviter=inviter_name,
        role=role,
        link=link,
        days=days,
    )
    mail.send(message, partner)
    return invitation


def find_invitation(db_session: Session, token: str) -> Invitation | None:
    """A live invitation of the current partner for this token, or None."""
    invitation = db_session.scalars(
        select(Invitation)
        .join(Customer, Customer.id == Invitation.customer_id)
        .where(Invitation.token_hash == token_hash(token))
        .execution_options(unscoped_customer=True)
    ).first()
    if invitation is None or invitation.accepted_at or invitation.revoked_at:
        return None
    if invitation.expires_at <= utcnow():
        return None
    return invitation


def existing_user(db_session: Session, email: str) -> User | None:
    return db_session.scalars(
        select(User)
        .where(func.lower(User.email) == email)
        .execution_options(unscoped_customer=True)
    ).first()


def accept_invitation(
    db_session: Session, partner: Partner, token: str, name: str, password: str
) -> User:
    """Join the account. A new person chooses a password; a known one proves theirs."""
    invitation = find_invitation(db_session, token)
    if invitation is None:
        raise ServiceError(_("This invitation is invalid, used or expired. Ask for a new one."))
    user = existing_user(db_session, invitation.email)
    if user is None:
        problems = password_messages(password, invitation.email)
        if problems:
            raise ServiceError(" ".join(problems), "password")
        if not name.strip():
            raise ServiceError(_("Enter your name."), "name")
        user = User(
            partner_id=partner.id,
            email=invitation.email,
            name=name.strip(),
            password_hash=hash_password(password),
        )
        db_session.add(user)
        db_session.flush()
    elif not verify_password(user.password_hash, password):
        raise ServiceError(
            _("That is not the password of %(email)s.", email=user.email), "password"
        )
    claimed = db_session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation.id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(accepted_at=utcnow())
        .execution_options(synchronize_session=False, unscoped_customer=True)
    ).rowcount  # type: ignore[attr-defined]
    if claimed != 1:
        db_session.rollback()
        raise ServiceError(_("This invitation is invalid, used or expired. Ask for a new one."))
    db_session.add(
        Membership(customer_id=invitation.customer_id, user_id=user.id, role=invitation.role)
    )
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=invitation.customer_id,
        actor=f"user:{user.id}",
        action="people.invitation_accepted",
        role=invitation.role.value,
    )
    db_session.commit()
    return user


def _administrators(db_session: Session, customer_id: int) -> int:
    return int(
        db_session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(
                Membership.customer_id == customer_id, Membership.role == CustomerRole.ADMINISTRATOR
            )
        )
        or 0
    )


def _keep_an_administrator(
    db_session: Session, membership: Membership, field: str | None = None
) -> None:
    """Refuse to demote or remove the account's last Administrator."""
    if (
        membership.role == CustomerRole.ADMINISTRATOR
        and _administrators(db_session, membership.customer_id) <= 1
    ):
        raise ServiceError(_("An account needs at least one Administrator."), field)


def change_role(
    db_session: Session, partner: Partner, membership: Membership, role: CustomerRole, actor: str
) -> None:
    if membership.role == role:
        return
    _keep_an_administrator(db_session, membership, "role")
    old = membership.role
    membership.role = role
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=membership.customer_id,
        actor=actor,
        action="people.role_changed",
        user_id=membership.user_id,
        old=old.value,
        new=role.value,
    )
    db_session.commit()


def remove_member(
    db_session: Session, partner: Partner, membership: Membership, actor: str
) -> None:
    _keep_an_administrator(db_session, membership)
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=membership.customer_id,
        actor=actor,
        action="people.removed",
        user_id=membership.user_id,
        role=membership.role.value,
    )
    db_session.delete(membership)
    db_session.commit()


def revoke_invitation(
    db_session: Session, partner: Partner, invitation: Invitation, actor: str
) -> None:
    if invitation.accepted_at is None and invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        audit.record(
            db_session,
            partner_id=partner.id,
            customer_id=invitation.customer_id,
            actor=actor,
            action="people.invitation_revoked",
            email=invitation.email,
        )
        db_session.commit()


def _headcount_query() -> Select[Any]:
    """The account's members and live invitations, counted in one round trip; built once with
    bound parameters (building it per dashboard view cost about a tenth of the page)."""
    customer_id = bindparam("customer_id", type_=Integer)
    members = (
        select(func.count())
        .select_from(Membership)
        .where(Membership.customer_id == customer_id)
        .scalar_subquery()
    )
    invited = (
        select(func.count())
        .select_from(Invitation)
        .where(_live_invitation(customer_id, bindparam("now", type_=UTCDateTime())))
        .scalar_subquery()
    )
    return select(members, invited)


def headcount(db_session: Session, customer_id: int) -> tuple[int, int]:
    """Members and live invitations of an account, in one round trip."""
    row = db_session.execute(_HEADCOUNT, {"customer_id": customer_id, "now": utcnow()}).one()
    return int(row[0]), int(row[1])


def _live_invitation(customer_id: Any, now: Any = None) -> ColumnElement[bool]:
    """Not accepted, not revoked, not expired (values or bound parameters)."""
    return and_(
        Invitation.customer_id == customer_id,
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > (utcnow() if now is None else now),
    )


_HEADCOUNT = _headcount_query()


def pending_invitations(db_session: Session, customer_id: int) -> list[Invitation]:
    return list(
        db_session.scalars(
            select(Invitation)
            .where(_live_invitation(customer_id))
            .order_by(Invitation.created_at.desc())
        )
    )


def finance_contacts(session: Session, customer_id: int) -> list[User]:
    """Active Finance Managers of the account; its Administrators when there is none."""
    for role in (CustomerRole.FINANCE_MANAGER, CustomerRole.ADMINISTRATOR):
        users = list(
            session.scalars(
                select(User)
                .join(Membership, Membership.user_id == User.id)
                .where(
                    Membership.customer_id == customer_id,
                    Membership.role == role,
                    User.active.is_(True),
                )
                .order_by(User.email)
            )
        )
        if users:
            return users
    return []


def team_emails(
    session: Session, partner_id: int, configured: str, roles: tuple[StaffRole, ...]
) -> list[str]:
    """Where a team is told: the configured address, else the partner's active staff of
    ``roles`` (the service team of failed licence changes, the finance team of credit holds)."""
    if configured:
        return [configured]
    return list(
        session.scalars(
            select(StaffUser.email)
            .where(
                StaffUser.partner_id == partner_id,
                StaffUser.active.is_(True),
                StaffUser.role.in_(roles),
            )
            .order_by(StaffUser.email)
            .execution_options(unscoped=True)
        )
    )
