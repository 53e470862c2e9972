"""The webhook benchmark's baseline: the least a Flask route that takes Stripe webhooks can do.

``POST /webhook`` verifies the ``Stripe-Signature`` of the raw body with the SDK's
``stripe.Webhook.construct_event`` (the same call and secret as the portal) and answers 200; 400
when it does not verify. No database. Served with ``gunicorn bench.webhooks_baseline:app``;
``BENCH_WEBHOOK_SECRET`` is the signing secret.
"""

from __future__ import annotations

import os

import stripe
from flask import Flask, request

app = Flask(__name__)
SECRET = os.environ.get("BENCH_WEBHOOK_SECRET", "")


@app.post("/webhook")
def webhook() -> tuple[str, int]:
    try:
        stripe.Webhook.construct_event(
            request.get_data(as_text=True), request.headers.get("Stripe-Signature"), SECRET
        )
    except (ValueError, stripe.SignatureVerificationError):
        return "bad signature", 400
    return "ok", 200
