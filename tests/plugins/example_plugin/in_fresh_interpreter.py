"""Run by test_example_plugin in a fresh interpreter (clean import state): build a portal with
``PORTAL_PLUGINS`` as given on the command line and print what a test needs to know, as JSON.

Usage: python in_fresh_interpreter.py <database file> [plugin names, comma-separated]
"""

from __future__ import annotations

import json
import sys

from portal.plugins import plugin_infos
from portal.testing.support import client_for, make_app, seed_partner


def main(database: str, plugins: str) -> dict[str, object]:
    names = [n for n in plugins.split(",") if n]
    app = make_app(f"sqlite:///{database}", names)
    report: dict[str, object] = {
        "imported": sorted(
            m
            for m in ("portal_example_plugin", "demo_provider", "demo_payments")
            if m in sys.modules
        ),
        "plugins": {
            name: {"version": info.version, "source": info.source, "hooks": list(info.hooks)}
            for name, info in plugin_infos(app).items()
        },
    }
    partner = seed_partner(app)
    anonymous = client_for(app, partner.host)
    report["anonymous_hello"] = anonymous.get("/p/example/hello").status_code
    client = client_for(app, partner.host)
    client.sign_in(partner.users["finance_manager"])
    dashboard = client.get("/")
    report["dashboard_status"] = dashboard.status_code
    report["dashboard_links_hello"] = 'href="/p/example/hello"' in dashboard.get_data(as_text=True)
    hello = client.get("/p/example/hello")
    report["hello_status"] = hello.status_code
    report["hello_greets"] = "Hello from the example plugin" in hello.get_data(as_text=True)
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")))
