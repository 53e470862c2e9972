"""Loading plugins: what makes the portal refuse to start, the ``flask portal plugins``
listing, settings, blueprints, adapter choice by configuration, and the test kit shipped to
plugin authors (fixtures, fake servers, contract suites). Events to plugins: test_events.py.

The small plugins here are first-party-style projects written to a temporary folder named in
``PORTAL_PLUGIN_PATHS``: exactly how the portal finds its own ``plugins/``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from portal import create_app
from portal.core.db import get_database
from portal.features.tenancy.models import Customer, Partner
from portal.integrations.notifications import Notification
from portal.integrations.registry import PluginError, integrations
from portal.integrations.results import Result, Succeeded
from portal.plugins import plugin_infos
from portal.testing.contracts import (
    AccountingSystemContract,
    FinishPayment,
    NotifierContract,
    PaymentGatewayContract,
    ProviderContract,
    SignWebhook,
)
from portal.testing.fake_server import FakeResponse, FakeServer, RecordedRequest
from portal.testing.fakes import (
    FakeAccountingSystem,
    FakeNotifier,
    FakePaymentGateway,
    FakeProvider,
)
from portal.testing.support import app_config
from tests.integration.conftest import MakePlugin
from tests.support import HttpsClient, seed_partner


def start(plugins: list[str] | str, folder: Path | None = None, **config: Any) -> Flask:
    """Build the portal (no database needed: nothing here reads it)."""
    if folder is not None:
        config["PORTAL_PLUGIN_PATHS"] = str(folder)
    return create_app(app_config("sqlite://", [], PORTAL_PLUGINS=plugins, **config))


PROVIDER = """
    from portal import hookimpl
    from portal.testing.fakes import FakeProvider

    @hookimpl
    def portal_register_providers(app):
        return [FakeProvider(key={key!r})]
"""


# -- refusing to start -----------------------------------------------------------------------


def test_an_unknown_plugin_name_stops_the_start_with_a_clear_message() -> None:
    with pytest.raises(PluginError) as failure:
        start(["no_such_plugin"])
    message = str(failure.value)
    assert "PORTAL_PLUGINS names 'no_such_plugin', which is not installed" in message
    assert "demo_payments" in message and "demo_provider" in message  # what could be named


@pytest.mark.parametrize("names", ["demo_provider, demo_provider", ["demo_provider"] * 2])
def test_a_plugin_named_twice_stops_the_start(names: str | list[str]) -> None:
    with pytest.raises(PluginError, match="PORTAL_PLUGINS names demo_provider more than once"):
        start(names)


def test_a_name_that_cannot_be_a_plugin_stops_the_start() -> None:
    with pytest.raises(PluginError, match="'Demo-Provider' is not a plugin name"):
        start("Demo-Provider")


def test_two_adapters_with_the_same_key_stop_the_start(make_plugin: MakePlugin) -> None:
    make_plugin("plugintest_one", PROVIDER.format(key="twin"))
    folder = make_plugin("plugintest_two", PROVIDER.format(key="twin"))
    with pytest.raises(PluginError) as failure:
        start(["plugintest_one", "plugintest_two"], folder)
    message = str(failure.value)
    assert message.startswith("two provider adapters share the key 'twin' (plugins ")
    assert "'plugintest_one'" in message and "'plugintest_two'" in message
    assert message.endswith("keys must be unique")


def test_a_plugin_reusing_a_demo_adapter_key_stops_the_start(make_plugin: MakePlugin) -> None:
    folder = make_plugin("plugintest_copycat", PROVIDER.format(key="demo"))
    with pytest.raises(PluginError, match="share the key 'demo'"):
        start(["demo_provider", "plugintest_copycat"], folder)


def test_an_adapter_not_implementing_its_protocol_stops_the_start(
    make_plugin: MakePlugin,
) -> None:
    folder = make_plugin(
        "plugintest_halfway",
        """
        from portal import hookimpl

        class HalfAProvider:
            key = "half"
            display_name = "Half a provider"

            def get_subscription(self, customer_tenant_id, subscription_ref):
                return None
            # no set_quantity

        @hookimpl
        def portal_register_providers(app):
            return [HalfAProvider()]
        """,
    )
    with pytest.raises(
        PluginError, match=r"plugin 'plugintest_halfway' registered .*HalfAProvider"
    ):
        start(["plugintest_halfway"], folder)
    with pytest.raises(PluginError, match="does not implement ProviderAdapter"):
        start(["plugintest_halfway"], folder)


def test_a_misspelt_hook_stops_the_start(make_plugin: MakePlugin) -> None:
    folder = make_plugin(
        "plugintest_typo",
        """
        from portal import hookimpl

        @hookimpl
        def portal_regster_providers(app):
            return []
        """,
    )
    with pytest.raises(PluginError, match="a plugin implements a hook that does not exist") as e:
        start(["plugintest_typo"], folder)
    assert "portal_regster_providers" in str(e.value)


def test_a_plugin_view_without_an_access_declaration_stops_the_start(
    make_plugin: MakePlugin,
) -> None:
    folder = make_plugin(
        "plugintest_open",
        """
        from flask import Blueprint
        from portal import hookimpl

        bp = Blueprint("plugintest_open", __name__)

        @bp.route("/secret")
        def secret():
            return "anyone could read this"

        @hookimpl
        def portal_blueprints(app):
            return bp
        """,
    )
    with pytest.raises(RuntimeError, match="Every route must declare who may use it") as e:
        start(["plugintest_open"], folder)
    assert "plugintest_open.secret" in str(e.value)


# -- UI slots: the documented order ----------------------------------------------------------

# registry._results walks pluggy's hookimpls reversed (LIFO), so results come in the reverse
# of registration order, against what portal/hookspecs/app.py promises


def _ui_plugin(make_plugin: MakePlugin, name: str) -> Path:
    return make_plugin(
        name,
        f"""
        from portal import hookimpl
        from portal.core.roles import Permission
        from portal.integrations.ui import NavItem

        @hookimpl
        def portal_nav_items():
            return [NavItem("{name}", "pages.dashboard", Permission.VIEW_DASHBOARD)]

        @hookimpl
        def portal_template_context():
            return {{"plugintest_who": "{name}"}}
        """,
    )


def test_hook_portal_nav_items_are_collected_in_registration_order(
    make_plugin: MakePlugin,
) -> None:
    _ui_plugin(make_plugin, "plugintest_first")
    folder = _ui_plugin(make_plugin, "plugintest_second")
    app = start(["plugintest_first", "plugintest_second"], folder)
    labels = [item.label for item in integrations(app).nav_items()]
    assert labels == ["plugintest_first", "plugintest_second"]


def test_hook_portal_template_context_a_later_plugin_wins(make_plugin: MakePlugin) -> None:
    _ui_plugin(make_plugin, "plugintest_first")
    folder = _ui_plugin(make_plugin, "plugintest_second")
    app = start(["plugintest_first", "plugintest_second"], folder)
    assert integrations(app).template_context()["plugintest_who"] == "plugintest_second"


# -- listing, settings -----------------------------------------------------------------------


def test_flask_portal_plugins_lists_version_hooks_adapters_and_masked_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORTAL_DEMO_PAYMENTS_WEBHOOK_SECRET", "whsec_do_not_show_me")
    monkeypatch.setenv("PORTAL_DEMO_PROVIDER_FAILURE_RATE", "0.25")
    app = start(["demo_provider", "demo_payments"])
    result = app.test_cli_runner().invoke(args=["portal", "plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("demo_provider 0.1.0  [") for line in lines)
    assert any(line.startswith("demo_payments 0.1.0  [") for line in lines)
    assert "  hooks: portal_migration_locations, portal_register_providers" in lines
    assert (
        "  hooks: portal_blueprints, portal_migration_locations, portal_register_payment_gateways"
        in lines
    )
    assert "  provider: demo" in lines
    assert "  payment gateway: demo" in lines
    assert "  PORTAL_DEMO_PROVIDER_FAILURE_RATE=0.25" in lines
    assert "  PORTAL_DEMO_PAYMENTS_WEBHOOK_SECRET=••••••" in lines
    assert "whsec_do_not_show_me" not in result.output


def test_flask_portal_plugins_says_when_none_is_loaded() -> None:
    result = start([]).test_cli_runner().invoke(args=["portal", "plugins"])
    assert "no plugins loaded (name them in PORTAL_PLUGINS)" in result.output


def test_plugin_settings_come_from_portal_name_variables(
    make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_plugin(
        "plugintest_settings",
        """
        from portal import hookimpl
        from portal.plugins import plugin_settings

        @hookimpl
        def portal_startup(app):
            app.extensions["plugintest_settings"] = plugin_settings(app, "plugintest_settings")
        """,
    )
    monkeypatch.setenv("PORTAL_PLUGINTEST_SETTINGS_GREETING", "hola")
    monkeypatch.setenv("PORTAL_PLUGINTEST_SETTINGS_API_TOKEN", "tok_do_not_show_me")
    monkeypatch.setenv("PORTAL_PLUGINTEST_OTHER_GREETING", "not mine")
    app = start(
        ["plugintest_settings"],
        folder,
        PORTAL_PLUGIN_SETTINGS={"plugintest_settings": {"GREETING": "hello", "COLOUR": "blue"}},
    )
    assert app.extensions["plugintest_settings"] == {
        "GREETING": "hello",  # the app's own config wins over the environment
        "API_TOKEN": "tok_do_not_show_me",
        "COLOUR": "blue",
    }
    shown = plugin_infos(app)["plugintest_settings"].settings
    assert shown["API_TOKEN"] == "••••••"
    assert shown["GREETING"] == "hello"


# -- blueprints and templates --------------------------------------------------------------


def test_a_plugin_blueprint_is_mounted_under_p_and_its_name(
    make_plugin: MakePlugin, app_factory: Callable[..., Flask]
) -> None:
    folder = make_plugin(
        "plugintest_web",
        """
        from flask import Blueprint
        from portal import hookimpl
        from portal.features.tenancy.branding import render_page
        from portal.web.access import public

        bp = Blueprint("plugintest_web", __name__, template_folder="templates")

        @bp.route("/hello")
        @public
        def hello():
            return render_page("plugintest_web/hello.html")

        @hookimpl
        def portal_blueprints(app):
            return [bp]
        """,
        templates={
            "plugintest_web/hello.html": """
                {% extends "base.html" %}
                {% block title %}Hello{% endblock %}
                {% block content %}<p id="greeting">Hello from a plugin page</p>{% endblock %}
            """
        },
    )
    app = app_factory(PORTAL_PLUGINS=["plugintest_web"], PORTAL_PLUGIN_PATHS=str(folder))
    seed_partner(app, "alpha", "portal-a.test")
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    page = client.get("/p/plugintest_web/hello")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<p id="greeting">Hello from a plugin page</p>' in html
    assert "Alpha Cloud" in html  # inside the partner's page layout
    assert client.get("/hello").status_code == 404


# -- adapter choice ----------------------------------------------------------------------------

TWO_PROVIDERS = """
    from portal import hookimpl
    from portal.testing.fakes import FakeProvider

    @hookimpl
    def portal_register_providers(app):
        return [FakeProvider(key="alpha"), FakeProvider(key="beta")]
"""


def test_configuration_selects_the_provider_customer_then_partner_then_default(
    make_plugin: MakePlugin, app_factory: Callable[..., Flask]
) -> None:
    folder = make_plugin("plugintest_providers", TWO_PROVIDERS)
    app = app_factory(
        PORTAL_PLUGINS=["plugintest_providers"],
        PORTAL_PLUGIN_PATHS=str(folder),
        PORTAL_PROVIDER="alpha",
    )
    tenant = seed_partner(app, "alpha", "portal-a.test")
    with app.app_context(), get_database(app).sessions() as session:
        partner = session.get(Partner, tenant.partner.id)
        customer = session.get(Customer, tenant.customers["a"].id)
        assert partner is not None and customer is not None
        loaded = integrations(app)

        def chosen() -> str:
            return loaded.provider(customer.provider_key, partner.provider_key).key

        assert chosen() == "alpha"  # nothing chosen: PORTAL_PROVIDER
        partner.provider_key = "beta"
        assert chosen() == "beta"  # the partner's choice
        customer.provider_key = "alpha"
        assert chosen() == "alpha"  # a customer bought through another provider
        customer.provider_key = "gamma"
        with pytest.raises(PluginError, match=r"no provider adapter with key 'gamma'.*alpha, beta"):
            chosen()


def test_no_adapter_chosen_anywhere_is_a_clear_error(make_plugin: MakePlugin) -> None:
    folder = make_plugin("plugintest_providers", TWO_PROVIDERS)
    app = start(["plugintest_providers"], folder, PORTAL_PROVIDER="")
    with (
        app.app_context(),
        pytest.raises(PluginError, match="no adapter chosen: set PORTAL_PROVIDER"),
    ):
        integrations(app).provider(None, None)


def test_the_demo_plugins_serve_when_configured() -> None:
    app = start(
        ["demo_provider", "demo_payments"], PORTAL_PROVIDER="demo", PORTAL_PAYMENT_GATEWAY="demo"
    )
    with app.app_context():
        assert integrations(app).provider(None, None).display_name == "Demo provider"
        assert integrations(app).payment_gateway(None).display_name == "Demo payments"


# -- the test kit: fixtures ----------------------------------------------------------------------


class TestThePortalAppFixture:
    @pytest.fixture
    def portal_plugins(self) -> list[str]:
        return ["demo_provider", "demo_payments"]

    def test_it_migrates_the_core_and_the_enabled_plugins_branches(self, portal_app: Flask) -> None:
        inspector = sa.inspect(get_database(portal_app).engine)
        tables = set(inspector.get_table_names())
        assert {"partner", "demo_provider_subscription", "demo_payments_payment"} <= tables
        with get_database(portal_app).engine.connect() as conn:
            heads = set(conn.scalars(sa.text("SELECT version_num FROM alembic_version")))
        assert {"demo_provider_0002", "demo_payments_0002"} <= heads

    def test_its_client_signs_in_on_the_partner_s_host(
        self, portal_client: Any, portal_partner: Any
    ) -> None:
        portal_client.sign_in(portal_partner.users["administrator"])
        assert portal_client.get("/").status_code == 200


def test_without_plugins_the_app_has_only_the_core_tables(portal_app: Flask) -> None:
    tables = set(sa.inspect(get_database(portal_app).engine).get_table_names())
    assert "partner" in tables
    assert not [t for t in tables if t.startswith(("demo_provider_", "demo_payments_"))]


def test_portal_fake_server_plays_a_vendor_and_records_requests(
    portal_fake_server: Callable[..., FakeServer],
) -> None:
    calls = {"n": 0}

    def vendor(request: RecordedRequest) -> FakeResponse:
        calls["n"] += 1
        if calls["n"] == 1:
            return FakeResponse(429, {"error": "slow down"}, {"Retry-After": "7"})
        return FakeResponse(201, {"id": "sub_1", "quantity": request.json()["quantity"]})

    fake = portal_fake_server(vendor)
    assert fake.url.startswith("http://127.0.0.1:")

    def post() -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(  # noqa: S310  (the local fake)
            f"{fake.url}/v1/subscriptions/sub_1?dry=0",
            data=json.dumps({"quantity": 5}).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": "k-1"},
            method="PATCH",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return response.status, dict(response.headers), json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.load(error)

    status, headers, body = post()
    assert (status, headers["Retry-After"], body) == (429, "7", {"error": "slow down"})
    status, _, body = post()
    assert (status, body) == (201, {"id": "sub_1", "quantity": 5})
    assert len(fake.requests) == 2
    first = fake.requests_to("/v1/subscriptions/sub_1", "PATCH")[0]
    assert first.headers["idempotency-key"] == "k-1"  # case-insensitive
    assert first.query == {"dry": ["0"]}
    assert first.json() == {"quantity": 5}


def test_a_fake_server_whose_handler_raises_answers_500_and_keeps_the_error() -> None:
    def broken(request: RecordedRequest) -> FakeResponse:
        raise ValueError("bug in the fake")

    with FakeServer(broken) as fake:
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(f"{fake.url}/x", timeout=5)  # noqa: S310
        assert failure.value.code == 500
        assert "bug in the fake" in fake.errors[0]


# -- the test kit: every contract suite runs against the test doubles ---------------------------


class TestFakeProviderHonoursTheProviderContract(ProviderContract):
    @pytest.fixture
    def adapter(self) -> FakeProvider:
        return FakeProvider()


class TestFakePaymentGatewayHonoursThePaymentGatewayContract(PaymentGatewayContract):
    @pytest.fixture
    def adapter(self) -> FakePaymentGateway:
        return FakePaymentGateway()

    @pytest.fixture
    def sign_webhook(self, adapter: FakePaymentGateway) -> SignWebhook:
        def sign(body: bytes, timestamp: int | None = None) -> dict[str, str]:
            return adapter.sign(body, timestamp)

        return sign

    @pytest.fixture
    def webhook_body(self) -> bytes:
        return json.dumps({"id": "evt_1", "type": "payment.succeeded", "payment": None}).encode()

    @pytest.fixture
    def finish_payment(self, adapter: FakePaymentGateway) -> FinishPayment:
        def finish(session: Any, succeed: bool) -> None:
            adapter.finish(session.gateway_ref, succeed)

        return finish


class TestFakeAccountingSystemHonoursTheAccountingContract(AccountingSystemContract):
    """The accounting contract has no first-party adapter yet: it runs against this double."""

    @pytest.fixture
    def adapter(self) -> FakeAccountingSystem:
        return FakeAccountingSystem()


class TestFakeNotifierHonoursTheNotifierContract(NotifierContract):
    """The notifier contract has no first-party adapter yet: it runs against this double."""

    @pytest.fixture
    def adapter(self) -> FakeNotifier:
        return FakeNotifier()

    @pytest.fixture
    def deliveries(self, adapter: FakeNotifier) -> Callable[[str], int]:
        return adapter.deliveries


class _ForgetfulNotifier(FakeNotifier):
    """A broken double: it sends again on every call, whatever the key."""

    def send(self, notification: Notification) -> Result[None]:
        self.sent.append(notification)
        return Succeeded(None)


def test_the_notifier_contract_catches_a_repeated_send() -> None:
    """The suite is not vacuous: a notifier that sends twice fails it."""
    adapter = _ForgetfulNotifier()

    def make() -> Notification:
        return Notification("key-1", "someone@example.com", "Subject", "Text", "Contoso Cloud")

    with pytest.raises(AssertionError, match="a repeated send went out again"):
        NotifierContract().test_contract_send_is_at_most_once_per_idempotency_key(
            adapter, make, adapter.deliveries
        )
