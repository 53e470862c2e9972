"""The webhook benchmark's baseline: the least a Flask route that takes Stripe webhooks can do.

``POST /webhook`` verifies the ``Stripe-Signature`` of the raw body with the SDK's
``stripe.WebhookSignature.verify_header`` (the same call, tolerance and secret as the portal),
parses the body once with ``json`` as the portal does, and answers 200; 400 when it does not
verify. No database. Served with ``gunicorn bench.webhooks_baseline:app``;
``BENCH_WEBHOOK_SECRET`` is the signing secret.
"""

from __future__ import annotations

import json
import os

import stripe
from flask import Flask, request

app = Flask(__name__)
SECRET = os.environ.get("BENCH_WEBHOOK_SECRET", "")
TOLERANCE_SECONDS = stripe.Webhook.DEFAULT_TOLERANCE


@app.post("/webhook")
def webhook() -> tuple[str, int]:
    payload = request.get_data(as_text=True)
    try:
        stripe.WebhookSignature.verify_header(
            payload, request.headers.get("Stripe-Signature", ""), SECRET, TOLERANCE_SECONDS
        )
        json.loads(payload)
    except (ValueError, stripe.SignatureVerificationError):
        return "bad signature", 400
    return "ok", 200
