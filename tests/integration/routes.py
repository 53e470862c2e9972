"""Every route of the app, with how to reach it as its intended user and with foreign ids.

Tests that walk ``app.url_map`` read these tables; a route missing from them fails those
tests, so each new route must say here which objects its ids name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from flask import Flask

from portal.core.db import get_database, utcnow
from portal.core.roles import CustomerRole
from portal.features.identity.models import Invitation
from tests.support import Tenant

Ids = Callable[[Tenant, str], dict[str, object]]


@dataclass(frozen=True)
class ObjectRoute:
    """A route taking object ids: ``ids(tenant, customer_key)`` gives its URL arguments."""

    ids: Ids


def _membership(tenant: Tenant, key: str) -> dict[str, object]:
    return {"membership_id": tenant.memberships[f"{key}:subscription_manager"].id}


def _customer(tenant: Tenant, key: str) -> dict[str, object]:
    return {"customer_id": tenant.customers[key].id}


def _invitation(tenant: Tenant, key: str) -> dict[str, object]:
    return {"invitation_id": tenant.invitations[key]}  # type: ignore[attr-defined]


def _subscription(tenant: Tenant, key: str) -> dict[str, object]:
    return {"subscription_id": tenant.subscriptions[key]}


def _product(tenant: Tenant, key: str) -> dict[str, object]:
    return {"product_id": tenant.products["standard"]}


def _change(tenant: Tenant, key: str) -> dict[str, object]:
    return {"change_id": tenant.changes[key]}


def _invoice(tenant: Tenant, key: str) -> dict[str, object]:
    return {"invoice_id": tenant.invoices[key]}  # type: ignore[attr-defined]


def _contract(tenant: Tenant, key: str) -> dict[str, object]:
    return {"contract_id": tenant.contracts[key]}  # type: ignore[attr-defined]


def _attempt(tenant: Tenant, key: str) -> dict[str, object]:
    return {"attempt_id": tenant.payment_attempts[key]}  # type: ignore[attr-defined]


def _card_setup(tenant: Tenant, key: str) -> dict[str, object]:
    return {"setup_id": tenant.card_setups[key]}  # type: ignore[attr-defined]


def _card(tenant: Tenant, key: str) -> dict[str, object]:
    return {"profile_id": tenant.cards[key]}  # type: ignore[attr-defined]


# endpoint -> how to name the objects it acts on
OBJECT_ROUTES: dict[str, ObjectRoute] = {
    "account.change_role": ObjectRoute(_membership),
    "account.remove_user": ObjectRoute(_membership),
    "account.revoke_invitation": ObjectRoute(_invitation),
    "pages.switch_account": ObjectRoute(_customer),
    "subscriptions.detail": ObjectRoute(_subscription),
    "subscriptions.changes": ObjectRoute(_subscription),
    "subscriptions.preview": ObjectRoute(_subscription),
    "subscriptions.change": ObjectRoute(_subscription),
    "subscriptions.auto_renew": ObjectRoute(_subscription),
    "subscriptions.renewal_quantity": ObjectRoute(_subscription),
    "staff_catalogue.product": ObjectRoute(_product),
    "staff_catalogue.set_price": ObjectRoute(_product),
    "staff_catalogue.remove_price": ObjectRoute(_product),
    "staff_licences.retry": ObjectRoute(_change),
    "staff_licences.resolve": ObjectRoute(_change),
    "invoices.detail": ObjectRoute(_invoice),
    "invoices.pdf": ObjectRoute(_invoice),
    "staff_billing.invoice": ObjectRoute(_invoice),
    "staff_billing.invoice_pdf": ObjectRoute(_invoice),
    "staff_billing.issue": ObjectRoute(_invoice),
    "staff_billing.void": ObjectRoute(_invoice),
    "staff_billing.discard": ObjectRoute(_invoice),
    "staff.customer": ObjectRoute(_customer),
    "staff.credit_hold": ObjectRoute(_customer),
    "staff.invite": ObjectRoute(_customer),
    "payments.pay": ObjectRoute(_invoice),
    "payments.attempt": ObjectRoute(_attempt),
    "payments.attempt_status": ObjectRoute(_attempt),
    "payments.card_added": ObjectRoute(_card_setup),
    "payments.make_default": ObjectRoute(_card),
    "payments.remove_card": ObjectRoute(_card),
    "staff.send_card_link": ObjectRoute(_customer),
    "staff.hold_rules": ObjectRoute(_customer),
    "staff_contracts.customer_contracts": ObjectRoute(_customer),
    "staff_contracts.new_contract": ObjectRoute(_customer),
    "staff_contracts.contract": ObjectRoute(_contract),
    "staff_contracts.update_contract": ObjectRoute(_contract),
    "staff_contracts.make_default": ObjectRoute(_contract),
    "staff_contracts.deactivate": ObjectRoute(_contract),
    "staff_contracts.move_here": ObjectRoute(_contract),
    "staff_onboarding.import_page": ObjectRoute(_customer),
    "staff_onboarding.import_subscriptions": ObjectRoute(_customer),
}

# routes whose arguments are not object ids, and why they are safe without a matrix entry
NOT_OBJECT_ARGUMENTS: dict[str, str] = {
    "static": "public assets by file name",
    "branding.theme_static": "the current partner's own theme files by name, path-checked",
    "auth.reset_password": "a secret single-use token, tested in test_password_reset",
    "staff_auth.reset_password": "a secret single-use token, tested in test_password_reset",
    "auth.accept_invitation": "a secret single-use token, tested in test_invitations",
    "subscriptions.buy": "the partner's catalogue, shared by all its customers; another "
    "partner's product is 404 (test_licences)",
    "card_links.start": "a secret single-use token, tested in test_payments_card_links",
    "card_links.finish": "a secret single-use token, tested in test_payments_card_links",
}


def add_invitations(app: Flask, tenant: Tenant) -> None:
    """Give each customer of the tenant one pending invitation (ids in tenant.invitations)."""
    ids: dict[str, int] = {}
    with app.app_context(), get_database(app).sessions() as s:
        for key, customer in tenant.customers.items():
            invitation = Invitation(
                customer_id=customer.id,
                email=f"pending@{key}.{tenant.partner.slug}.example",
                role=CustomerRole.FINANCE_MANAGER,
                token_hash=f"{key}{tenant.partner.slug}".ljust(64, "0"),
                invited_by="test",
                expires_at=utcnow().replace(year=utcnow().year + 1),
            )
            s.add(invitation)
            s.flush()
            ids[key] = invitation.id
        s.commit()
    tenant.invitations = ids  # type: ignore[attr-defined]


def add_invoices(app: Flask, tenant: Tenant) -> None:
    """Give each customer of the tenant a contract and one issued invoice (ids in
    tenant.invoices), with a payment attempt, a card setup and a saved card (ids in
    tenant.payment_attempts, tenant.card_setups, tenant.cards)."""
    from tests.integration.invoice_pages_support import Line, contract, invoice

    ids: dict[str, int] = {}
    contracts: dict[str, int] = {}
    for key in tenant.customers:
        contracts[key] = contract(app, tenant, key)
        ids[key] = invoice(
            app,
            tenant,
            contracts[key],
            number=f"INV-{tenant.partner.slug}-{key}",
            period=(date(2026, 5, 1), date(2026, 6, 1)),
            lines=[Line("Seats", "1", "10.00", 1_000)],
            issued_on=date(2026, 5, 1),
            due_on=date(2026, 5, 31),
        )
    tenant.invoices = ids  # type: ignore[attr-defined]
    tenant.contracts = contracts  # type: ignore[attr-defined]
    add_payment_objects(app, tenant)


def add_payment_objects(app: Flask, tenant: Tenant) -> None:
    """An open payment attempt on each customer's invoice, a card setup and a saved card."""
    from portal.features.payments.models import (
        AttemptKind,
        AttemptState,
        CardSetup,
        CardSetupState,
        PaymentAttempt,
        PaymentProfile,
    )

    attempts: dict[str, int] = {}
    setups: dict[str, int] = {}
    cards: dict[str, int] = {}
    slug = tenant.partner.slug
    with app.app_context(), get_database(app).sessions() as s:
        for key, customer in tenant.customers.items():
            tenancy = {"partner_id": tenant.partner.id, "customer_id": customer.id}
            attempt = PaymentAttempt(
                **tenancy,
                invoice_id=tenant.invoices[key],  # type: ignore[attr-defined]
                number=1,
                kind=AttemptKind.ON_SESSION,
                state=AttemptState.OPEN,
                amount_minor=1_000,
                currency="USD",
                gateway_key="demo",
                idempotency_key=f"matrix-{slug}-{key}",
                created_by="test",
            )
            setup = CardSetup(
                **tenancy,
                gateway_key="demo",
                idempotency_key=f"matrix-setup-{slug}-{key}",
                state=CardSetupState.OPEN,
                created_by="test",
            )
            card = PaymentProfile(
                **tenancy,
                gateway_key="demo",
                card_ref=f"dpm_matrix_{slug}_{key}",
                gateway_customer_ref=f"dcus_matrix_{slug}_{key}",
                brand="visa",
                last4="4242",
                exp_month=12,
                exp_year=2030,
                default_for=customer.id,
                created_by="test",
            )
            s.add_all([attempt, setup, card])
            s.flush()
            attempts[key], setups[key], cards[key] = attempt.id, setup.id, card.id
        s.commit()
    tenant.payment_attempts = attempts  # type: ignore[attr-defined]
    tenant.card_setups = setups  # type: ignore[attr-defined]
    tenant.cards = cards  # type: ignore[attr-defined]


def object_argument_names(app: Flask, endpoint: str) -> set[str]:
    rules = [r for r in app.url_map.iter_rules() if r.endpoint == endpoint]
    return set().union(*(r.arguments for r in rules)) if rules else set()
