"""The staff catalogue: products listed, created and edited, prices per currency in minor units,
every refusal with its message and no change, permissions per staff role, partners apart."""

from __future__ import annotations

from datetime import date
from html import unescape
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal.core.db import get_database
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import (
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)
from portal.features.identity.models import AuditEvent
from portal.features.licences.models import Subscription, SubscriptionStatus
from tests.support import HttpsClient, Tenant, post_form, sign_in

NEW = "/staff/catalogue/new"
DASH = "\N{EN DASH}"  # between minimum and maximum quantity


def add_product(
    app: Flask,
    tenant: Tenant,
    name: str = "Microsoft 365 Business Premium",
    prices: dict[str, tuple[int, int]] | None = None,
    **overrides: Any,
) -> int:
    """A product of the tenant (P1Y, monthly, 1 to 300 seats, 168-hour window), with prices."""
    values: dict[str, Any] = {
        "partner_id": tenant.partner.id,
        "name": name,
        "product_class": ProductClass.RESALE,
        "subscription_type": SubscriptionType.LICENCE,
        "provider_offer_id": f"CFQ7TTC0LCHC:0002:{name[:8]}",
        "term": Term.P1Y,
        "billing_frequency": BillingFrequency.MONTHLY,
        "min_quantity": 1,
        "max_quantity": 300,
        "reduction": ReductionBehaviour.WITHIN_WINDOW,
        "window_hours": 168,
        **overrides,
    }
    with app.app_context(), get_database(app).sessions() as s:
        product = Product(**values)
        for currency, (price, cost) in (prices or {}).items():
            product.prices.append(
                ProductPrice(
                    partner_id=tenant.partner.id,
                    currency=currency,
                    price_minor=price,
                    cost_minor=cost,
                )
            )
        s.add(product)
        s.commit()
        return product.id


def product_form(**overrides: str) -> dict[str, str]:
    return {
        "name": "Contoso Backup",
        "description": "Daily backup of Microsoft 365 mailboxes",
        "product_class": "ip",
        "subscription_type": "licence",
        "provider_key": "",
        "provider_offer_id": "contoso-backup-m",
        "term": "P1M",
        "billing_frequency": "monthly",
        "min_quantity": "5",
        "max_quantity": "500",
        "reduction": "allowed",
        "window_hours": "168",
        "requires_mca": "",
        "bundle_id": "",
        "active": "y",
        **overrides,
    }


def _checked(data: dict[str, str]) -> dict[str, str]:
    """A browser sends no unchecked checkbox."""
    return {key: value for key, value in data.items() if value != "" or key not in CHECKBOXES}


CHECKBOXES = {"requires_mca", "active"}


def text(response: Any) -> str:
    return unescape(response.get_data(as_text=True))


def audit_actions(app: Flask, prefix: str = "catalogue.") -> list[AuditEvent]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                select(AuditEvent)
                .where(AuditEvent.action.like(f"{prefix}%"))
                .order_by(AuditEvent.id)
                .execution_options(unscoped=True)
            )
        )


def product_row(app: Flask, product_id: int) -> Product:
    with app.app_context(), get_database(app).sessions() as s:
        product = s.get_one(Product, product_id)
        _ = product.prices
        return product


def count(app: Flask, model: type) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


# -- listing ---------------------------------------------------------------------------------


def test_the_catalogue_lists_products_with_their_terms_bundles_and_prices(
    app: Flask, client: HttpsClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    bundle = add_product(
        app,
        tenant,
        "Modern Workplace Bundle",
        prices={"USD": (1250, 1000), "JPY": (1500, 1200)},
        provider_offer_id="MWB-001",
    )
    add_product(
        app,
        tenant,
        "Defender for Office 365",
        bundle_id=bundle,
        provider_offer_id="DFO-365",
        reduction=ReductionBehaviour.DISALLOWED,
        requires_mca=True,
    )
    add_product(
        app,
        tenant,
        "Onboarding service",
        product_class=ProductClass.SERVICES,
        subscription_type=SubscriptionType.SERVICE,
        provider_offer_id="SVC-ONB",
        term=Term.P3Y,
        billing_frequency=BillingFrequency.TRIENNIAL,
        min_quantity=2,
        max_quantity=40,
        reduction=ReductionBehaviour.ALLOWED,
        requires_mca=False,
        active=False,
    )
    add_product(app, other_tenant, "Beta's own product", provider_offer_id="BETA-1")
    sign_in(client, "finance@staff.alpha.example", staff=True)
    page = text(client.get("/staff/catalogue"))
    assert "2 products" in page  # top-level products; the component is listed with its bundle
    for shown in (
        "Modern Workplace Bundle",
        "MWB-001",
        "1 year (P1Y)",
        "Monthly",
        f"1{DASH}300",
        "Within a window after purchase or addition",
        "168 hours",
        "$12.50",
        "cost $10.00",
        "¥1,500",
        "Component of Modern Workplace Bundle",
        "Not during the term",
        "Onboarding service",
        "3 years (P3Y)",
        "Every three years",
        f"2{DASH}40",
        "Inactive",
        "No price",
    ):
        assert shown in page, shown
    # the bundle lists its component, the component comes right after its bundle
    assert page.index("Modern Workplace Bundle") < page.index("DFO-365") < page.index("SVC-ONB")
    assert "Beta's own product" not in page
    # finance may look, not change
    assert "/staff/catalogue/new" not in page
    assert f'href="/staff/catalogue/{bundle}"' not in page
    assert "No product matches “nothing-like-it”." in text(
        client.get("/staff/catalogue?q=nothing-like-it")
    )
    # a search finds a bundle by its component's name
    found = text(client.get("/staff/catalogue?q=defender"))
    assert "1 product" in found and "Modern Workplace Bundle" in found


def test_the_catalogue_is_paginated(app: Flask, client: HttpsClient, tenant: Tenant) -> None:
    for i in range(27):
        add_product(app, tenant, f"Product {i:02d}")
    sign_in(client, "sales@staff.alpha.example", staff=True)
    first = text(client.get("/staff/catalogue"))
    assert "27 products" in first and "Product 24" in first and "Product 25" not in first
    second = text(client.get("/staff/catalogue?page=2"))
    assert "Product 26" in second and "Product 00" not in second


def test_an_empty_catalogue_says_what_to_do(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "sales@staff.alpha.example", staff=True)
    page = text(client.get("/staff/catalogue"))
    assert "The catalogue is empty. Add the first product with “New product”." in page


# -- creating and editing -----------------------------------------------------------------------


def test_create_a_product_then_edit_it(app: Flask, client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "sales@staff.alpha.example", staff=True)
    form = text(client.get(NEW))
    assert 'value="168"' in form  # the Microsoft new commerce window is the default
    response = post_form(client, NEW, _checked(product_form()))
    assert response.status_code == 302
    product_id = int(response.location.rsplit("/", 1)[1])
    page = text(client.get(response.location))
    assert "Contoso Backup is in the catalogue. Now give it a price." in page
    assert "No price yet: customers cannot buy this product until it has one." in page
    product = product_row(app, product_id)
    assert product.partner_id == tenant.partner.id
    assert (product.name, product.description) == (
        "Contoso Backup",
        "Daily backup of Microsoft 365 mailboxes",
    )
    assert product.product_class is ProductClass.IP
    assert product.subscription_type is SubscriptionType.LICENCE
    assert (product.provider_key, product.provider_offer_id) == (None, "contoso-backup-m")
    assert (product.term, product.billing_frequency) == (Term.P1M, BillingFrequency.MONTHLY)
    assert (product.min_quantity, product.max_quantity) == (5, 500)
    assert product.reduction is ReductionBehaviour.ALLOWED
    assert (product.requires_mca, product.active, product.bundle_id) == (False, True, None)

    # edit: the form shows what is stored; a change is saved and audited field by field
    assert 'value="contoso-backup-m"' in page and 'value="500"' in page
    url = f"/staff/catalogue/{product_id}"
    edited = product_form(
        name="Contoso Backup Plus",
        max_quantity="1000",
        term="P1Y",
        billing_frequency="annual",
        reduction="within_window",
        window_hours="72",
        requires_mca="y",
    )
    response = post_form(client, url, _checked(edited), follow_redirects=True)
    assert "Contoso Backup Plus is saved." in text(response)
    product = product_row(app, product_id)
    assert (product.name, product.max_quantity, product.window_hours) == (
        "Contoso Backup Plus",
        1000,
        72,
    )
    assert (product.term, product.billing_frequency) == (Term.P1Y, BillingFrequency.ANNUAL)
    assert product.requires_mca is True
    listing = text(client.get("/staff/catalogue"))
    assert "Contoso Backup Plus" in listing and "72 hours" in listing and f"5{DASH}1000" in listing

    # saving the same again records nothing
    response = post_form(client, url, _checked(edited), follow_redirects=True)
    assert "Nothing changed in Contoso Backup Plus." in text(response)
    events = audit_actions(app)
    assert [e.action for e in events] == ["catalogue.product_created", "catalogue.product_updated"]
    created, updated = events
    assert created.actor == f"staff:{tenant.staff['sales'].id}"
    assert created.detail["product"] == product_id and created.detail["name"] == "Contoso Backup"
    assert updated.detail["name"] == "Contoso Backup → Contoso Backup Plus"
    assert updated.detail["max_quantity"] == "500 → 1000"
    assert updated.detail["term"] == "P1M → P1Y"
    assert "min_quantity" not in updated.detail  # only what changed


def test_window_hours_are_kept_when_no_window_applies(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    product_id = add_product(app, tenant, window_hours=72)
    sign_in(client, "admin@staff.alpha.example", staff=True)
    url = f"/staff/catalogue/{product_id}"
    data = product_form(reduction="disallowed", window_hours="", term="P1Y")
    response = post_form(client, url, _checked(data))
    assert response.status_code == 302
    product = product_row(app, product_id)
    assert product.reduction is ReductionBehaviour.DISALLOWED and product.window_hours == 72


def test_a_product_joins_a_bundle(app: Flask, client: HttpsClient, tenant: Tenant) -> None:
    bundle = add_product(app, tenant, "Modern Workplace Bundle")
    sign_in(client, "admin@staff.alpha.example", staff=True)
    form = text(client.get(NEW))
    assert f'<option value="{bundle}">Modern Workplace Bundle</option>' in form
    response = post_form(client, NEW, _checked(product_form(bundle_id=str(bundle))))
    assert response.status_code == 302
    component = int(response.location.rsplit("/", 1)[1])
    assert product_row(app, component).bundle_id == bundle
    page = text(client.get(f"/staff/catalogue/{bundle}"))
    assert "Components" in page and "Contoso Backup" in page
    # a component is no bundle to choose, and a bundle with components joins no other bundle
    other = add_product(app, tenant, "Another bundle")
    assert f'value="{component}"' not in text(client.get(f"/staff/catalogue/{other}"))
    response = post_form(
        client,
        f"/staff/catalogue/{other}",
        _checked(product_form(bundle_id=str(component))),
    )
    assert response.status_code == 422 and "Not a valid choice." in text(response)
    response = post_form(
        client,
        f"/staff/catalogue/{bundle}",
        _checked(product_form(bundle_id=str(other), name="Modern Workplace Bundle")),
    )
    assert response.status_code == 422
    assert (
        "This product has components of its own; a bundle cannot be part of another bundle."
        in text(response)
    )
    assert product_row(app, bundle).bundle_id is None


BAD_PRODUCTS = [
    ({"name": ""}, "Enter the product's name."),
    ({"name": "   "}, "Enter the product's name."),
    ({"provider_offer_id": ""}, "Enter the provider's offer id."),
    ({"provider_offer_id": "x" * 201}, "Keep the offer id to 200 characters or fewer."),
    ({"name": "x" * 201}, "Keep the name to 200 characters or fewer."),
    ({"min_quantity": "0"}, "The minimum quantity must be between 1 and 1000000."),
    ({"min_quantity": "-3"}, "The minimum quantity must be between 1 and 1000000."),
    ({"min_quantity": "two"}, "Not a valid integer value."),
    ({"min_quantity": ""}, "Enter the minimum quantity, a whole number."),
    ({"max_quantity": "4"}, "The maximum quantity cannot be below the minimum (5)."),
    ({"max_quantity": "99999999999"}, "The maximum quantity must be between 1 and 1000000."),
    ({"billing_frequency": "annual"}, "A one-month term (P1M) is billed monthly."),
    (
        {"term": "P1Y", "billing_frequency": "triennial"},
        "A one-year term (P1Y) is billed monthly or annually.",
    ),
    (
        {"reduction": "within_window", "window_hours": ""},
        "Enter how many hours the reduction window lasts.",
    ),
    (
        {"reduction": "within_window", "window_hours": "0"},
        "The window must last between 1 and 8784 hours.",
    ),
    ({"product_class": "hardware"}, "Not a valid choice."),
    ({"provider_key": "no_such_provider"}, "Not a valid choice."),
    ({"bundle_id": "999999"}, "Not a valid choice."),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_PRODUCTS)
def test_each_bad_product_input_is_refused_with_its_message(
    app: Flask, client: HttpsClient, tenant: Tenant, overrides: dict[str, str], message: str
) -> None:
    existing = add_product(app, tenant, "Existing product")
    sign_in(client, "sales@staff.alpha.example", staff=True)
    response = post_form(client, NEW, _checked(product_form(**overrides)))
    assert response.status_code == 422
    page = text(response)
    assert message in page and "Please check the following:" in page
    assert count(app, Product) == 1
    # the entered values are kept
    assert 'value="contoso-backup-m"' in page or "provider_offer_id" in overrides
    # the same refusal when editing, and the product is as it was
    before = product_row(app, existing)
    response = post_form(
        client, f"/staff/catalogue/{existing}", _checked(product_form(**overrides))
    )
    assert response.status_code == 422 and message in text(response)
    after = product_row(app, existing)
    assert {c: getattr(after, c) for c in COLUMNS} == {c: getattr(before, c) for c in COLUMNS}
    assert audit_actions(app) == []


COLUMNS = [c.key for c in Product.__table__.columns]  # type: ignore[attr-defined]


def test_several_mistakes_are_all_reported(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "sales@staff.alpha.example", staff=True)
    data = product_form(max_quantity="1", billing_frequency="annual", provider_offer_id=" ")
    page = text(post_form(client, NEW, _checked(data)))
    assert "Enter the provider's offer id." in page
    assert "A one-month term (P1M) is billed monthly." in page
    assert "The maximum quantity cannot be below the minimum (5)." in page


# -- prices --------------------------------------------------------------------------------------


def _set_price(client: HttpsClient, product_id: int, currency: str, price: str, cost: str) -> Any:
    return post_form(
        client,
        f"/staff/catalogue/{product_id}/prices",
        {"currency": currency, "price": price, "cost": cost},
        page=f"/staff/catalogue/{product_id}",
    )


def _prices(app: Flask, product_id: int) -> dict[str, tuple[int, int]]:
    with app.app_context(), get_database(app).sessions() as s:
        rows = s.scalars(select(ProductPrice).where(ProductPrice.product_id == product_id))
        return {p.currency: (p.price_minor, p.cost_minor) for p in rows}


def test_prices_are_stored_in_minor_units_exactly(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    product_id = add_product(app, tenant)
    sign_in(client, "sales@staff.alpha.example", staff=True)
    for currency, price, cost in (
        ("JPY", "1500", "1200"),
        ("usd", "12.50", "10.1"),
        ("KWD", "1.234", "0.999"),
        ("EUR", "0.10", "0"),
        ("CHF", "19.90", "17.00"),
    ):
        response = _set_price(client, product_id, currency, price, cost)
        assert response.status_code == 302, text(response)
    assert _prices(app, product_id) == {
        "JPY": (1500, 1200),
        "USD": (1250, 1010),
        "KWD": (1234, 999),
        "EUR": (10, 0),
        "CHF": (1990, 1700),
    }
    page = text(client.get(f"/staff/catalogue/{product_id}"))
    assert "¥1,500" in page and "$12.50" in page and "$10.10" in page and "KWD" in page
    # the same currency again changes its price: one row per currency
    response = _set_price(client, product_id, "USD", "13", "10.10")
    page = text(client.get(response.location))
    assert "Microsoft 365 Business Premium costs customers $13.00 in USD." in page
    assert _prices(app, product_id)["USD"] == (1300, 1010)
    # trailing zeros are no extra precision
    assert _set_price(client, product_id, "JPY", "1600.00", "1200").status_code == 302
    assert _prices(app, product_id)["JPY"] == (1600, 1200)
    events = audit_actions(app, "catalogue.price")
    assert [(e.detail["currency"], e.detail["price"]) for e in events] == [
        ("JPY", "1500"),
        ("USD", "12.50"),
        ("KWD", "1.234"),
        ("EUR", "0.10"),
        ("CHF", "19.90"),
        ("USD", "13.00"),
        ("JPY", "1600"),
    ]
    assert events[5].detail["previous_price"] == "12.50"
    # the same amounts again record nothing
    assert _set_price(client, product_id, "USD", "13.00", "10.10").status_code == 302
    assert len(audit_actions(app, "catalogue.price")) == 7


BAD_PRICES = [
    (("USD", "12.505", "10"), "USD amounts have at most 2 decimals."),
    (("JPY", "1500.5", "1200"), "JPY amounts have no decimals."),
    (("KWD", "1", "0.0001"), "KWD amounts have at most 3 decimals."),
    (("USD", "12,50", "10"), "Enter an amount like 12.50, with no currency sign."),
    (("USD", "$12.50", "10"), "Enter an amount like 12.50, with no currency sign."),
    (("USD", "-1", "10"), "Enter an amount like 12.50, with no currency sign."),
    (("USD", "1e3", "10"), "Enter an amount like 12.50, with no currency sign."),
    (("USD", "NaN", "10"), "Enter an amount like 12.50, with no currency sign."),
    (("USD", "12.50", ""), "Enter the cost."),
    (("USD", "", "10"), "Enter the price."),
    (("USD", "99999999999", "10"), "That amount is too large."),
    (("XYZ", "12.50", "10"), "XYZ is not a currency in use today."),
    (("DEM", "12.50", "10"), "DEM is not a currency in use today."),
    (("US", "12.50", "10"), "Enter a three-letter ISO 4217 code, like USD."),
    (("U5D", "12.50", "10"), "Enter a three-letter ISO 4217 code, like USD."),
    (("", "12.50", "10"), "Enter a three-letter ISO 4217 code, like USD."),
]


@pytest.mark.parametrize(("entered", "message"), BAD_PRICES)
def test_each_bad_price_is_refused_with_its_message(
    app: Flask,
    client: HttpsClient,
    tenant: Tenant,
    entered: tuple[str, str, str],
    message: str,
) -> None:
    product_id = add_product(app, tenant, prices={"USD": (1000, 800)})
    sign_in(client, "admin@staff.alpha.example", staff=True)
    response = _set_price(client, product_id, *entered)
    assert response.status_code == 422
    page = text(response)
    assert message in page
    assert 'value="Microsoft 365 Business Premium"' in page  # the product form is shown as stored
    assert _prices(app, product_id) == {"USD": (1000, 800)}
    assert audit_actions(app) == []


def test_remove_a_price(app: Flask, client: HttpsClient, tenant: Tenant) -> None:
    product_id = add_product(app, tenant, prices={"USD": (1250, 1000), "EUR": (1150, 900)})
    customer = tenant.customers["a"]
    with app.app_context(), get_database(app).sessions() as s:
        s.add(
            Subscription(
                partner_id=tenant.partner.id,
                customer_id=customer.id,
                product_id=product_id,
                provider_key="demo",
                provider_ref="sub-1",
                status=SubscriptionStatus.ACTIVE,
                quantity=5,
                term=Term.P1Y,
                billing_frequency=BillingFrequency.MONTHLY,
                currency="USD",
                term_ends_on=date(2030, 1, 1),
            )
        )
        s.commit()
    sign_in(client, "sales@staff.alpha.example", staff=True)
    url = f"/staff/catalogue/{product_id}/prices/remove"
    page_url = f"/staff/catalogue/{product_id}"
    response = post_form(client, url, {"currency": "EUR"}, page=page_url, follow_redirects=True)
    assert "The price in EUR is removed from Microsoft 365 Business Premium." in text(response)
    assert _prices(app, product_id) == {"USD": (1250, 1000)}
    # a price that subscriptions are billed at stays
    response = post_form(client, url, {"currency": "USD"}, page=page_url, follow_redirects=True)
    assert (
        "1 subscription is billed in USD with this price; change the price instead of "
        "removing it." in text(response)
    )
    response = post_form(client, url, {"currency": "GBP"}, page=page_url, follow_redirects=True)
    assert "This product has no price in GBP." in text(response)
    assert _prices(app, product_id) == {"USD": (1250, 1000)}
    [removed] = audit_actions(app)
    assert removed.action == "catalogue.price_removed"
    assert (removed.detail["currency"], removed.detail["price"]) == ("EUR", "11.50")


# -- who may ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "manages"), [("admin", True), ("sales", True), ("service", False), ("finance", False)]
)
def test_staff_roles_and_the_catalogue(
    app: Flask, client: HttpsClient, tenant: Tenant, role: str, manages: bool
) -> None:
    product_id = add_product(app, tenant, prices={"USD": (1250, 1000)})
    sign_in(client, f"{role}@staff.alpha.example", staff=True)
    home = text(client.get("/staff/"))
    assert 'href="/staff/catalogue"' in home  # every staff role sees the catalogue
    listing = client.get("/staff/catalogue")
    assert listing.status_code == 200
    assert ('href="/staff/catalogue/new"' in text(listing)) is manages
    expected = 200 if manages else 403
    assert client.get(NEW).status_code == expected
    assert client.get(f"/staff/catalogue/{product_id}").status_code == expected
    token_page = "/staff/catalogue"
    assert post_form(client, NEW, _checked(product_form()), page=token_page).status_code == (
        302 if manages else 403
    )
    assert post_form(
        client,
        f"/staff/catalogue/{product_id}/prices",
        {"currency": "EUR", "price": "1", "cost": "1"},
        page=token_page,
    ).status_code == (302 if manages else 403)
    assert post_form(
        client,
        f"/staff/catalogue/{product_id}/prices/remove",
        {"currency": "USD"},
        page=token_page,
    ).status_code == (302 if manages else 403)
    if not manages:
        assert count(app, Product) == 1
        assert _prices(app, product_id) == {"USD": (1250, 1000)}


def test_another_partners_product_is_not_found(
    app: Flask, client: HttpsClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = add_product(app, other_tenant, "Beta product", prices={"USD": (500, 400)})
    sign_in(client, "admin@staff.alpha.example", staff=True)
    token_page = "/staff/catalogue"
    assert client.get(f"/staff/catalogue/{theirs}").status_code == 404
    for url, data in (
        (f"/staff/catalogue/{theirs}", _checked(product_form())),
        (f"/staff/catalogue/{theirs}/prices", {"currency": "EUR", "price": "1", "cost": "1"}),
        (f"/staff/catalogue/{theirs}/prices/remove", {"currency": "USD"}),
    ):
        assert post_form(client, url, data, page=token_page).status_code == 404, url
    # nor can one of theirs become the bundle of ours
    response = post_form(client, NEW, _checked(product_form(bundle_id=str(theirs))))
    assert response.status_code == 422 and "Not a valid choice." in text(response)
    product = product_row(app, theirs)
    assert product.name == "Beta product"
    assert _prices(app, theirs) == {"USD": (500, 400)}
    assert count(app, Product) == 1
