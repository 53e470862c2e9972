"""Onboarding from the staff pages: a new customer with its default contract, its existing
subscriptions imported from the (fake) Partner Center, and purchases that always land on a
contract. Everything goes through pages and the worker's handlers; nothing is inserted."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from partner_center_provider.fake import FakePartnerCenter, Fault

from portal.core.db import get_database, utcnow
from portal.core.errors import ServiceError
from portal.features.billing.models import BillingContract
from portal.features.catalogue.models import Product
from portal.features.identity.models import AuditEvent
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import ChangeKind, ChangeState
from portal.features.onboarding import services as onboarding
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import local_today
from tests.integration.billing_support import make_product
from tests.support import HttpsClient, Tenant, post_form, sign_in

ES = {"Accept-Language": "es"}
TENANT = "0F9E8D7C-6B5A-4321-9876-0123456789AB"
GOOD = {
    "name": "Fabrikam Ltd",
    "tenant_id": TENANT,
    "domain": "fabrikam.onmicrosoft.com",
    "currency": "eur",
    "payment_terms_days": "14",
    "credit_limit": "5000.50",
    "provider_key": "",
}


@pytest.fixture
def fake() -> Any:
    server = FakePartnerCenter().start()
    yield server
    server.stop()
    assert not server.errors, "the fake Partner Center failed:\n" + "\n".join(server.errors)


@pytest.fixture
def app(app_factory: Any, fake: FakePartnerCenter) -> Flask:
    app: Flask = app_factory(
        PORTAL_PLUGINS="partner_center_provider",
        PORTAL_PROVIDER="partner_center",
        PORTAL_PLUGIN_SETTINGS={
            "partner_center": {"STATIC_TOKEN": "onboarding-token", "BASE_URL": fake.url}
        },
        PORTAL_BROKER_URL="memory://",
        PORTAL_TASK_QUEUE=f"test-{uuid.uuid4().hex[:10]}",
    )
    return app


def _staff(app: Flask, role: str = "admin") -> HttpsClient:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, f"{role}@staff.alpha.example", staff=True)
    return client


def _customers(app: Flask) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Customer)) or 0


def _onboard(client: HttpsClient, **change: str) -> Any:
    return post_form(client, "/staff/customers/new", {**GOOD, **change}, follow_redirects=True)


def test_staff_onboard_a_customer_with_its_default_contract(app: Flask, tenant: Tenant) -> None:
    client = _staff(app, "service")
    assert "New customer" in client.get("/staff/").get_data(as_text=True)
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Partner, tenant.partner.id).default_currency = "GBP"
        s.commit()
    # the form starts from the partner's default currency
    assert 'value="GBP"' in client.get("/staff/customers/new").get_data(as_text=True)
    page = _onboard(client).get_data(as_text=True)
    assert "Fabrikam Ltd is a customer now, with a default contract in EUR." in page
    assert "0f9e8d7c-6b5a-4321-9876-0123456789ab" in page  # the canonical form
    assert "fabrikam.onmicrosoft.com" in page and "Import subscriptions from the provider" in page
    with app.app_context(), get_database(app).sessions() as s:
        customer = s.scalars(sa.select(Customer).where(Customer.name == "Fabrikam Ltd")).one()
        assert (customer.ms_tenant_id, customer.default_currency) == (TENANT.lower(), "EUR")
        assert (customer.payment_terms_days, customer.credit_limit_minor) == (14, 500_050)
        contract = s.scalars(
            sa.select(BillingContract).where(BillingContract.customer_id == customer.id)
        ).one()
        partner = s.get_one(Partner, tenant.partner.id)
        assert (contract.name, contract.currency, contract.is_default) == (
            "Default (EUR)",
            "EUR",
            True,
        )
        assert contract.anchor_on == local_today(partner, utcnow())
        assert contract.payment_terms_days == 14
        actions = set(
            s.scalars(sa.select(AuditEvent.action).where(AuditEvent.customer_id == customer.id))
        )
        assert {"customer.onboarded", "billing.contract_created"} <= actions


def test_the_new_customer_page_speaks_spanish(app: Flask, tenant: Tenant) -> None:
    client = _staff(app)
    form = client.get("/staff/customers/new", headers=ES).get_data(as_text=True)
    assert "Nuevo cliente" in form and "Id. de inquilino de Microsoft" in form
    token = form.split('name="csrf_token" type="hidden" value="')[-1].split('"')[0]
    response = client.post(
        "/staff/customers/new",
        data={**GOOD, "tenant_id": "not-a-guid", "csrf_token": token},
        headers=ES,
    )
    assert response.status_code == 422
    assert "Un id. de inquilino de Microsoft tiene esta forma" in response.get_data(as_text=True)
    page = post_form(client, "/staff/customers/new", GOOD, headers=ES, follow_redirects=True)
    assert "Fabrikam Ltd ya es cliente, con un contrato predeterminado en EUR." in page.get_data(
        as_text=True
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": " "}, "Give the customer a name of at most 200 characters."),
        ({"name": "x" * 201}, "Give the customer a name of at most 200 characters."),
        ({"tenant_id": "fabrikam.com"}, "A Microsoft tenant id looks like"),
        ({"tenant_id": "0f9e8d7c6b5a432198760123456789ab"}, "A Microsoft tenant id looks like"),
        ({"domain": "not a domain"}, "A domain looks like contoso.onmicrosoft.com"),
        ({"currency": "EURO"}, "EURO is not a currency code like USD or EUR."),
        ({"payment_terms_days": "-1"}, "Payment terms are a number of days from 0 to 365."),
        ({"payment_terms_days": "soon"}, "Not a valid integer value."),
        ({"credit_limit": "lots"}, "A credit limit is an amount of 0 or more in EUR"),
        ({"credit_limit": "-5"}, "A credit limit is an amount of 0 or more in EUR"),
        ({"credit_limit": "10.001"}, "A credit limit is an amount of 0 or more in EUR"),
        ({"credit_limit": "NaN"}, "A credit limit is an amount of 0 or more in EUR"),
        ({"provider_key": "nobody"}, "Not a valid choice"),
    ],
)
def test_a_bad_customer_is_refused_with_its_reason_and_nothing_is_made(
    app: Flask, tenant: Tenant, change: dict[str, str], message: str
) -> None:
    client = _staff(app)
    before = _customers(app)
    response = post_form(client, "/staff/customers/new", {**GOOD, **change})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _customers(app) == before


def test_a_tenant_id_is_one_customers_only(
    app: Flask, tenant: Tenant, other_tenant: Tenant
) -> None:
    taken = tenant.customers["a"].ms_tenant_id
    assert taken is not None
    client = _staff(app)
    before = _customers(app)
    response = post_form(client, "/staff/customers/new", {**GOOD, "tenant_id": taken.upper()})
    assert response.status_code == 422
    assert "Another customer already has this Microsoft tenant id." in response.get_data(
        as_text=True
    )
    assert _customers(app) == before


@pytest.mark.parametrize("role", ["finance", "sales"])
def test_only_service_staff_and_administrators_onboard(
    app: Flask, tenant: Tenant, role: str
) -> None:
    client = _staff(app, role)
    assert "New customer" not in client.get("/staff/").get_data(as_text=True)
    assert client.get("/staff/customers/new").status_code == 403
    customer = tenant.customers["a"].id
    assert client.get(f"/staff/customers/{customer}/import").status_code == 403


# -- importing from Partner Center --------------------------------------------------------------


def _catalogue_offer(app: Flask, tenant: Tenant, currency: str = "EUR") -> tuple[int, str]:
    product_id = make_product(app, tenant.partner.id, currency=currency)
    with app.app_context(), get_database(app).sessions() as s:
        product = s.get_one(Product, product_id)
        product.provider_key = "partner_center"
        s.commit()
        return product_id, product.provider_offer_id


def _onboarded(app: Flask, client: HttpsClient) -> int:
    _onboard(client)
    with app.app_context(), get_database(app).sessions() as s:
        return s.scalars(sa.select(Customer.id).where(Customer.name == "Fabrikam Ltd")).one()


def test_existing_subscriptions_are_imported_onto_the_default_contract(
    app: Flask, tenant: Tenant, fake: FakePartnerCenter
) -> None:
    product_id, offer = _catalogue_offer(app, tenant)
    client = _staff(app, "service")
    customer_id = _onboarded(app, client)
    started = utcnow() - timedelta(days=40)
    known = fake.add_subscription(
        TENANT.lower(),
        offer,
        12,
        term_duration="P1Y",
        billing_cycle="monthly",
        purchased_at=started,
        friendly_name="Business Standard",
    )
    fake.add_subscription(TENANT.lower(), "UNKNOWN:0001", 3, friendly_name="Visio Plan 2")
    fake.add_subscription(TENANT.lower(), offer, 4, status="deleted", friendly_name="Old one")

    page = client.get(f"/staff/customers/{customer_id}/import").get_data(as_text=True)
    assert "Business Standard" in page and "12" in page
    assert "Unknown offer" in page and "Add a product with this offer id" in page
    assert "it is not active at the provider." in page
    assert page.count('name="refs"') == 1

    done = post_form(
        client,
        f"/staff/customers/{customer_id}/import",
        {"refs": known, "contract": _default_contract(app, customer_id)},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "1 subscription imported. It is invoiced from its contract" in done
    assert "Imported" in done
    with app.app_context(), get_database(app).sessions() as s:
        imported = s.scalars(
            sa.select(Subscription).where(Subscription.customer_id == customer_id)
        ).one()
        assert (imported.product_id, imported.quantity, imported.provider_ref) == (
            product_id,
            12,
            known,
        )
        assert imported.status is SubscriptionStatus.ACTIVE
        assert str(imported.billing_contract_id) == _default_contract(app, customer_id)
        assert imported.term_started_at.date() in {
            started.date(),
            (started + timedelta(days=1)).date(),
            (started - timedelta(days=1)).date(),
        }
        log = s.scalars(
            sa.select(LicenceChange).where(LicenceChange.subscription_id == imported.id)
        ).one()
        assert (log.kind, log.state, log.quantity_from, log.quantity_to) == (
            ChangeKind.IMPORT,
            ChangeState.NOT_APPLICABLE,
            12,
            12,
        )
    # a second import of the same makes nothing more
    again = post_form(
        client,
        f"/staff/customers/{customer_id}/import",
        {"refs": known, "contract": _default_contract(app, customer_id)},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Those subscriptions were imported already: nothing changed." in again
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscription)) == 1


def _default_contract(app: Flask, customer_id: int) -> str:
    with app.app_context(), get_database(app).sessions() as s:
        return str(
            s.scalars(
                sa.select(BillingContract.id).where(
                    BillingContract.customer_id == customer_id, BillingContract.is_default
                )
            ).one()
        )


def test_an_unknown_offer_cannot_be_imported(
    app: Flask, tenant: Tenant, fake: FakePartnerCenter
) -> None:
    client = _staff(app)
    customer_id = _onboarded(app, client)
    unknown = fake.add_subscription(TENANT.lower(), "UNKNOWN:0001", 3)
    response = post_form(
        client,
        f"/staff/customers/{customer_id}/import",
        {"refs": unknown, "contract": _default_contract(app, customer_id)},
        page=f"/staff/customers/{customer_id}/import",
    )
    assert response.status_code == 422
    assert "cannot be imported: no product of the catalogue has its offer id." in response.get_data(
        as_text=True
    )
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscription)) == 0


def test_the_import_page_says_when_the_provider_cannot_answer(
    app: Flask, tenant: Tenant, fake: FakePartnerCenter
) -> None:
    client = _staff(app)
    customer_id = _onboarded(app, client)
    fake.inject(Fault.server_error(503, method="GET", path="/subscriptions"), times=5)
    page = client.get(f"/staff/customers/{customer_id}/import")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "could not list the customer&#39;s subscriptions" in text
    assert "Import the chosen subscriptions" not in text
    fake.clear_faults()


def test_the_import_page_speaks_spanish(
    app: Flask, tenant: Tenant, fake: FakePartnerCenter
) -> None:
    _product, offer = _catalogue_offer(app, tenant)
    client = _staff(app)
    customer_id = _onboarded(app, client)
    fake.add_subscription(TENANT.lower(), offer, 2, friendly_name="Business Standard")
    fake.add_subscription(TENANT.lower(), "UNKNOWN:0001", 3)
    page = client.get(f"/staff/customers/{customer_id}/import", headers=ES).get_data(as_text=True)
    assert "Importar suscripciones" in page and "Oferta desconocida" in page


def test_two_imports_of_one_subscription_at_once_make_it_once(
    app: Flask, tenant: Tenant, fake: FakePartnerCenter
) -> None:
    """Two staff import the same subscription at the same moment: the second sees it as new
    (the first has not committed), waits for the first's row and is refused; one row."""
    _product, offer = _catalogue_offer(app, tenant)
    customer_id = _onboarded(app, _staff(app))
    ref = fake.add_subscription(TENANT.lower(), offer, 5, friendly_name="Business Standard")
    first_wrote = threading.Event()
    outcomes: list[object] = []

    def import_it(first: bool) -> None:
        with app.app_context(), get_database(app).sessions() as s:
            partner = s.get_one(Partner, tenant.partner.id)
            customer = s.get_one(Customer, customer_id)
            if not first:
                assert first_wrote.wait(10)
            try:
                made = onboarding.import_subscriptions(s, partner, customer, [ref], "staff")
                if first:
                    first_wrote.set()
                    time.sleep(0.5)  # the second has listed it as new and is writing now
                s.commit()
                outcomes.append(len(made))
            except ServiceError as error:
                s.rollback()
                outcomes.append(error.message)

    threads = [threading.Thread(target=import_it, args=(first,)) for first in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # one made it; the other was refused with the reason (never an error page, never a second
    # row). SQLite serialises the two transactions from their first statement, so there the
    # second reads the first's row and imports nothing; PostgreSQL lets it read before the
    # first commits, and the unique reference refuses its row.
    sqlite = str(app.config["PORTAL_DATABASE_URL"]).startswith("sqlite")
    second = "0" if sqlite else "Business Standard was imported meanwhile: list them again."
    assert sorted(map(str, outcomes)) == sorted(["1", second]), outcomes
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscription)) == 1


def test_staff_find_a_customer_at_partner_center_and_onboard_it(
    app: Flask, tenant: Tenant, fake: FakePartnerCenter
) -> None:
    fake.add_customer(TENANT.lower(), name="Fabrikam Ltd", domain="fabrikam.onmicrosoft.com")
    fake.add_customer(name="Fabrikam Labs", domain="fabrikamlabs.onmicrosoft.com")
    fake.add_customer(name="Contoso", domain="contoso.onmicrosoft.com")
    client = _staff(app)
    by_domain = client.get("/staff/customers/new?find=FABRIKAM").get_data(as_text=True)
    assert "Fabrikam Ltd" in by_domain and "Fabrikam Labs" in by_domain
    assert "Contoso" not in by_domain
    by_tenant = client.get(f"/staff/customers/new?find={TENANT}").get_data(as_text=True)
    assert "Fabrikam Ltd" in by_tenant and "Fabrikam Labs" not in by_tenant
    # "Use this customer" fills in the form
    used = client.get(
        f"/staff/customers/new?name=Fabrikam+Ltd&tenant_id={TENANT.lower()}"
        "&domain=fabrikam.onmicrosoft.com"
    ).get_data(as_text=True)
    assert f'value="{TENANT.lower()}"' in used and 'value="Fabrikam Ltd"' in used
    _onboard(client)
    again = client.get("/staff/customers/new?find=fabrikam.").get_data(as_text=True)
    assert "Already a customer: Fabrikam Ltd" in again
    nobody = client.get("/staff/customers/new?find=northwind").get_data(as_text=True)
    assert "The provider has no customer with that tenant id or domain." in nobody
    unknown = client.get(f"/staff/customers/new?find={uuid.uuid4()}").get_data(as_text=True)
    assert "The provider has no customer with that tenant id or domain." in unknown
    short = client.get("/staff/customers/new?find=ab")
    assert short.status_code == 200
    assert "first 3 or more letters of a domain" in short.get_data(as_text=True)
    spanish = client.get("/staff/customers/new?find=fabrikam", headers=ES).get_data(as_text=True)
    assert "Buscarlo en el proveedor" in spanish and "Ya es cliente: Fabrikam Ltd" in spanish
    fake.inject(Fault.server_error(503, path="/v1/customers"), times=5)
    down = client.get("/staff/customers/new?find=fabrikam").get_data(as_text=True)
    assert "could not search its customers" in down
    fake.clear_faults()
