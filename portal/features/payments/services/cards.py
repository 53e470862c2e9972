"""Saved cards (payment profiles, issue 6): adding one on the gateway's page, listing them
(brand, last 4, expiry), the default card autopay charges, removing one, and the single-use
link staff send so that a customer can add a card without signing in.

Card numbers never reach the portal: the customer types them on the gateway's page
(:meth:`~portal.integrations.payments.SavedCardGateway.start_card_setup`), and the portal keeps
what the gateway says of the card afterwards. Only a gateway that keeps cards
(:class:`~portal.integrations.payments.SavedCardGateway`) offers any of this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from flask import current_app
from sqlalchemy import Table, delete, select, update
from sqlalchemy.orm import Session

from portal.core.db import insert_ignoring, utcnow
from portal.core.errors import ServiceError, _
from portal.core.tokens import new_token, token_hash
from portal.features.billing.models import BillingContract
from portal.features.identity import audit
from portal.features.identity.services.auth import normalise_email
from portal.features.payments.models import (
    CardLink,
    CardSetup,
    CardSetupState,
    PaymentCustomer,
    PaymentProfile,
)
from portal.features.payments.services.gateway import gateway_for, new_key, require_paying_role
from portal.features.tenancy import mail
from portal.features.tenancy.models import Customer, Partner
from portal.integrations.payments import (
    CardSetupRequest,
    CustomerProfile,
    PaymentStatus,
    SavedCard,
    SavedCardGateway,
)
from portal.integrations.results import BusinessRejection, TechnicalFailure

log = logging.getLogger(__name__)

CARD_LINK_HOURS = 72  # default life of a card link (PORTAL_CARD_LINK_HOURS)
BRANDS = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "cartes_bancaires": "Cartes Bancaires",
}

_PROFILE = cast(Table, PaymentProfile.__table__)
_CUSTOMER = cast(Table, PaymentCustomer.__table__)
_LINK = cast(Table, CardLink.__table__)
_SETUP = cast(Table, CardSetup.__table__)


def brand_label(brand: str) -> str:
    """A card brand as people know it ("visa" is "Visa")."""
    return BRANDS.get(brand.lower(), brand.replace("_", " ").title())


def card_gateway(partner: Partner) -> SavedCardGateway | None:
    """The partner's gateway when it keeps cards; None when it does not (no saved cards)."""
    gateway = gateway_for(partner)
    return gateway if isinstance(gateway, SavedCardGateway) else None


def _require_card_gateway(partner: Partner) -> SavedCardGateway:
    gateway = card_gateway(partner)
    if gateway is None:
        raise ServiceError(_("The payment service in use cannot keep cards."))
    return gateway


# -- reading -----------------------------------------------------------------------------------


def cards(db_session: Session, customer_id: int) -> list[PaymentProfile]:
    """The customer's saved cards, the default first, then the newest."""
    return list(
        db_session.scalars(
            select(PaymentProfile)
            .where(PaymentProfile.customer_id == customer_id)
            .order_by(
                PaymentProfile.default_for.is_(None),
                PaymentProfile.created_at.desc(),
                PaymentProfile.id.desc(),
            )
        )
    )


def default_card(db_session: Session, customer_id: int) -> PaymentProfile | None:
    return db_session.scalars(
        select(PaymentProfile).where(
            PaymentProfile.customer_id == customer_id, PaymentProfile.default_for.is_not(None)
        )
    ).first()


def autopay_contracts(db_session: Session, customer_id: int) -> list[BillingContract]:
    """The customer's active contracts whose invoices are charged when issued."""
    return list(
        db_session.scalars(
            select(BillingContract)
            .where(
                BillingContract.customer_id == customer_id,
                BillingContract.autocharge.is_(True),
                BillingContract.active.is_(True),
            )
            .order_by(BillingContract.name, BillingContract.id)
        )
    )


# -- the gateway's customer ---------------------------------------------------------------------


def gateway_customer(db_session: Session, gateway: SavedCardGateway, customer: Customer) -> str:
    """The gateway's customer for ``customer``, made once (stored, and made with a key derived
    from the customer, so two requests at once make one). Commits when it makes one."""
    found = _known_gateway_customer(db_session, gateway.key, customer.id)
    if found is not None:
        return found
    # the creation time keeps the key unique across databases that reuse customer ids
    stamp = int(customer.created_at.timestamp()) if customer.created_at else 0
    made = gateway.ensure_customer(
        CustomerProfile(
            idempotency_key=f"portal-customer-{customer.id}-{stamp}",
            customer_ref=str(customer.id),
            name=customer.name,
        )
    )
    if isinstance(made, TechnicalFailure):
        raise ServiceError(
            _("The payment service did not answer. Nothing was changed; try again in a moment.")
        )
    if isinstance(made, BusinessRejection):
        log.warning("payments: the gateway refused to make a customer (%s)", made.code)
        raise ServiceError(_("The payment service refused: %(reason)s", reason=made.reason))
    connection = db_session.connection()
    connection.execute(
        insert_ignoring(connection, _CUSTOMER),
        {
            "partner_id": customer.partner_id,
            "customer_id": customer.id,
            "gateway_key": gateway.key,
            "gateway_customer_ref": made.value,
            "created_at": utcnow(),
        },
    )
    db_session.commit()
    return _known_gateway_customer(db_session, gateway.key, customer.id) or made.value


def _known_gateway_customer(db_session: Session, gateway_key: str, customer_id: int) -> str | None:
    return db_session.scalar(
        select(PaymentCustomer.gateway_customer_ref).where(
            PaymentCustomer.customer_id == customer_id,
            PaymentCustomer.gateway_key == gateway_key,
        )
    )


# -- adding a card ------------------------------------------------------------------------------


def start_card_setup(
    db_session: Session,
    *,
    partner: Partner,
    customer: Customer,
    actor: str,
    return_url: Callable[[int], str],
    role: str | None = None,
    card_link: CardLink | None = None,
) -> str:
    """Open the gateway's card-saving page for the customer and return its address; commits.
    A signed-in person must be an Administrator or Finance Manager; a card link stands in for
    the sign-in (``card_link``)."""
    if card_link is None:
        require_paying_role(role)
    gateway = _require_card_gateway(partner)
    customer_ref = gateway_customer(db_session, gateway, customer)
    now = utcnow()
    key = new_key(f"customer-{customer.id}-card-setup")
    setup_id = (
        db_session.connection()
        .execute(
            _SETUP.insert().returning(_SETUP.c.id),
            {
                "partner_id": customer.partner_id,
                "customer_id": customer.id,
                "gateway_key": gateway.key,
                "idempotency_key": key,
                "state": CardSetupState.OPEN,
                "card_link_id": card_link.id if card_link is not None else None,
                "created_by": actor,
                "created_at": now,
            },
        )
        .scalar_one()
    )
    db_session.commit()  # the setup and its key exist before the gateway is asked
    started = gateway.start_card_setup(
        CardSetupRequest(
            idempotency_key=key,
            customer_ref=str(customer.id),
            gateway_customer_ref=customer_ref,
            return_url=return_url(setup_id),
        )
    )
    if isinstance(started, TechnicalFailure):
        raise ServiceError(
            _("The payment service did not answer. Nothing was saved; try again in a moment.")
        )
    if isinstance(started, BusinessRejection):
        _end_setup(db_session, setup_id, CardSetupState.FAILED, started.reason)
        db_session.commit()
        raise ServiceError(_("The payment service refused: %(reason)s", reason=started.reason))
    db_session.connection().execute(
        update(_SETUP)
        .where(_SETUP.c.id == setup_id)
        .values(gateway_ref=started.value.gateway_ref, redirect_url=started.value.redirect_url)
    )
    db_session.commit()
    return started.value.redirect_url


@dataclass(frozen=True)
class SetupResult:
    """How a card setup ended (or stands): the card saved, or why not."""

    state: CardSetupState
    profile: PaymentProfile | None = None
    reason: str | None = None
    pending: bool = False  # the gateway has not finished it (yet)


def finish_card_setup(
    db_session: Session, partner: Partner, setup: CardSetup, actor: str
) -> SetupResult:
    """Ask the gateway how the setup ended and keep the card it saved; commits. A setup from a
    card link uses the link up: a link that was used or revoked meanwhile saves nothing (the
    card is removed from the gateway again)."""
    if setup.state is CardSetupState.SUCCEEDED:
        return SetupResult(CardSetupState.SUCCEEDED, _profile_for_setup(db_session, setup))
    if setup.state is CardSetupState.FAILED:
        return SetupResult(CardSetupState.FAILED, reason=setup.failure_reason)
    gateway = _require_card_gateway(partner)
    if setup.gateway_ref is None:
        return SetupResult(CardSetupState.OPEN, pending=True)
    answer = gateway.get_card_setup(setup.gateway_ref)
    if isinstance(answer, TechnicalFailure):
        return SetupResult(CardSetupState.OPEN, pending=True)
    if isinstance(answer, BusinessRejection):
        _end_setup(db_session, setup.id, CardSetupState.FAILED, answer.reason)
        db_session.commit()
        return SetupResult(CardSetupState.FAILED, reason=answer.reason)
    outcome = answer.value
    if outcome.status is PaymentStatus.FAILED:
        _end_setup(db_session, setup.id, CardSetupState.FAILED, outcome.failure_reason)
        db_session.commit()
        return SetupResult(CardSetupState.FAILED, reason=outcome.failure_reason)
    if outcome.status is not PaymentStatus.SUCCEEDED or outcome.card is None:
        return SetupResult(CardSetupState.OPEN, pending=True)
    if setup.card_link_id is not None and not _use_link(db_session, setup.card_link_id):
        db_session.rollback()
        gateway.detach_card(outcome.card.card_ref)
        _end_setup(db_session, setup.id, CardSetupState.FAILED, "card link already used")
        db_session.commit()
        return SetupResult(
            CardSetupState.FAILED,
            reason=_("This link was already used or has expired; the card was not saved."),
        )
    if not _end_setup(db_session, setup.id, CardSetupState.SUCCEEDED, None):
        db_session.rollback()  # finished by another request meanwhile: it kept the card
    else:
        keep_card(
            db_session,
            partner_id=setup.partner_id,
            customer_id=setup.customer_id,
            gateway_key=setup.gateway_key,
            card=outcome.card,
            actor=actor,
        )
        db_session.commit()
    return SetupResult(
        CardSetupState.SUCCEEDED,
        db_session.scalars(
            select(PaymentProfile).where(
                PaymentProfile.gateway_key == setup.gateway_key,
                PaymentProfile.card_ref == outcome.card.card_ref,
            )
        ).first(),
    )


def _profile_for_setup(db_session: Session, setup: CardSetup) -> PaymentProfile | None:
    return db_session.scalars(
        select(PaymentProfile)
        .where(PaymentProfile.customer_id == setup.customer_id)
        .order_by(PaymentProfile.created_at.desc(), PaymentProfile.id.desc())
    ).first()


def _end_setup(
    db_session: Session, setup_id: int, state: CardSetupState, reason: str | None
) -> bool:
    done = db_session.connection().execute(
        update(_SETUP)
        .where(_SETUP.c.id == setup_id, _SETUP.c.state == CardSetupState.OPEN)
        .values(state=state, failure_reason=(reason or None) and reason[:500], finished_at=utcnow())
    )
    return bool(done.rowcount == 1)


def keep_card(
    db_session: Session,
    *,
    partner_id: int,
    customer_id: int,
    gateway_key: str,
    card: SavedCard,
    actor: str,
) -> bool:
    """Store a card the gateway saved (once per card); the customer's first card becomes the
    default. Returns whether it was new. The caller commits."""
    connection = db_session.connection()
    has_default = default_card(db_session, customer_id) is not None
    inserted = connection.execute(
        insert_ignoring(connection, _PROFILE).returning(_PROFILE.c.id),
        {
            "partner_id": partner_id,
            "customer_id": customer_id,
            "gateway_key": gateway_key,
            "card_ref": card.card_ref,
            "gateway_customer_ref": card.gateway_customer_ref or "",
            "brand": (card.brand or "card")[:40],
            "last4": card.last4[-4:],
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "default_for": None if has_default else customer_id,
            "created_by": actor,
            "created_at": utcnow(),
        },
    ).scalar()
    if inserted is None:
        return False
    audit.record(
        db_session,
        partner_id=partner_id,
        customer_id=customer_id,
        actor=actor,
        action="payment_method.added",
        brand=card.brand,
        last4=card.last4,
        default=not has_default,
    )
    return True


# -- default and removal ----------------------------------------------------------------------


def _own_card(db_session: Session, customer_id: int, profile_id: int) -> PaymentProfile:
    found = db_session.scalars(
        select(PaymentProfile)
        .where(PaymentProfile.id == profile_id, PaymentProfile.customer_id == customer_id)
        .execution_options(populate_existing=True)
    ).first()
    if found is None:
        raise ServiceError(_("That card is not saved for this account (any more)."))
    return found


def set_default(
    db_session: Session, customer_id: int, profile_id: int, role: str | None, actor: str
) -> PaymentProfile:
    """Make a saved card the one autopay charges; commits."""
    require_paying_role(role)
    card = _own_card(db_session, customer_id, profile_id)
    if card.default_for is not None:
        return card
    connection = db_session.connection()
    # clear first: the unique constraint allows one default per customer at every moment
    connection.execute(
        update(_PROFILE)
        .where(_PROFILE.c.customer_id == customer_id, _PROFILE.c.default_for.is_not(None))
        .values(default_for=None)
    )
    connection.execute(
        update(_PROFILE).where(_PROFILE.c.id == card.id).values(default_for=customer_id)
    )
    audit.record(
        db_session,
        partner_id=card.partner_id,
        customer_id=customer_id,
        actor=actor,
        action="payment_method.default_set",
        brand=card.brand,
        last4=card.last4,
    )
    db_session.commit()
    return _own_card(db_session, customer_id, profile_id)


def remove_card(
    db_session: Session,
    partner: Partner,
    customer_id: int,
    profile_id: int,
    role: str | None,
    actor: str,
) -> PaymentProfile | None:
    """Remove a saved card at the gateway (it can never be charged again), then here; when it
    was the default, the newest remaining card becomes the default, and is returned. Commits.
    A gateway that does not answer leaves the card as it was."""
    require_paying_role(role)
    card = _own_card(db_session, customer_id, profile_id)
    gateway = _require_card_gateway(partner)
    if gateway.key == card.gateway_key:
        removed = gateway.detach_card(card.card_ref)
        if isinstance(removed, TechnicalFailure):
            raise ServiceError(
                _("The payment service did not answer, so the card is still saved. Try again.")
            )
        if isinstance(removed, BusinessRejection):
            # the gateway no longer knows it: it can be charged nowhere, forget it here too
            log.info("payments: card %s was already gone at the gateway", card.id)
    was_default = card.default_for is not None
    connection = db_session.connection()
    connection.execute(delete(_PROFILE).where(_PROFILE.c.id == card.id))
    successor = None
    if was_default:
        successor = db_session.scalars(
            select(PaymentProfile)
            .where(PaymentProfile.customer_id == customer_id)
            .order_by(PaymentProfile.created_at.desc(), PaymentProfile.id.desc())
        ).first()
        if successor is not None:
            connection.execute(
                update(_PROFILE)
                .where(_PROFILE.c.id == successor.id)
                .values(default_for=customer_id)
            )
    audit.record(
        db_session,
        partner_id=card.partner_id,
        customer_id=customer_id,
        actor=actor,
        action="payment_method.removed",
        brand=card.brand,
        last4=card.last4,
        new_default=successor.last4 if successor is not None else None,
    )
    db_session.commit()
    return successor


# -- card links ----------------------------------------------------------------------------------


def card_link_hours() -> int:
    return int(current_app.config.get("PORTAL_CARD_LINK_HOURS") or CARD_LINK_HOURS)


def send_card_link(
    db_session: Session,
    *,
    partner: Partner,
    customer: Customer,
    email: str,
    actor: str,
    link: Callable[[str], str],
    locale: str | None = None,
) -> CardLink:
    """Email ``email`` a single-use link to add a card to ``customer`` without signing in;
    an earlier live link to the same address stops working. Commits, then sends."""
    address = normalise_email(email or "")
    if "@" not in address or len(address) > 254 or address.startswith("@"):
        raise ServiceError(_("Enter the email address to send the link to."), "email")
    _require_card_gateway(partner)
    now = utcnow()
    db_session.execute(
        update(CardLink)
        .where(
            CardLink.customer_id == customer.id,
            CardLink.email == address,
            CardLink.used_at.is_(None),
            CardLink.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    token, digest = new_token()
    hours = card_link_hours()
    card_link = CardLink(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        token_hash=digest,
        email=address,
        created_by=actor,
        created_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    db_session.add(card_link)
    audit.record(
        db_session,
        partner_id=customer.partner_id,
        customer_id=customer.id,
        actor=actor,
        action="payment_method.link_sent",
        email=address,
        hours=hours,
    )
    db_session.commit()
    mail.send(
        mail.render_mail(
            "payment_card_link",
            partner,
            locale,
            to=address,
            customer=customer,
            link=link(token),
            hours=hours,
        ),
        partner,
    )
    return card_link


def find_card_link(db_session: Session, partner_id: int, token: str) -> CardLink | None:
    """The partner's live card link for ``token``: not used, not revoked, not expired."""
    if not token or len(token) > 200:
        return None
    found = db_session.scalars(
        select(CardLink)
        .where(CardLink.token_hash == token_hash(token), CardLink.partner_id == partner_id)
        .execution_options(unscoped_customer=True)
    ).first()
    if found is None or found.used_at is not None or found.revoked_at is not None:
        return None
    if found.expires_at <= utcnow():
        return None
    return found


def link_setup(
    db_session: Session, card_link: CardLink, setup_id: int | None = None
) -> CardSetup | None:
    """A card setup opened from this link: ``setup_id``, else the newest."""
    query = select(CardSetup).where(CardSetup.card_link_id == card_link.id)
    if setup_id is not None:
        query = query.where(CardSetup.id == setup_id)
    return db_session.scalars(
        query.order_by(CardSetup.id.desc()).execution_options(
            unscoped_customer=True, populate_existing=True
        )
    ).first()


def _use_link(db_session: Session, card_link_id: int) -> bool:
    """Use the link up, if it is still live (one conditional UPDATE: once, whoever asks)."""
    now = utcnow()
    used = db_session.connection().execute(
        update(_LINK)
        .where(
            _LINK.c.id == card_link_id,
            _LINK.c.used_at.is_(None),
            _LINK.c.revoked_at.is_(None),
            _LINK.c.expires_at > now,
        )
        .values(used_at=now)
    )
    return bool(used.rowcount == 1)


def customer_of_link(db_session: Session, card_link: CardLink) -> Customer:
    return db_session.scalars(
        select(Customer)
        .where(Customer.id == card_link.customer_id)
        .execution_options(unscoped_customer=True)
    ).one()
