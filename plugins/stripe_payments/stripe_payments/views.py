"""``POST /p/stripe/webhook``: Stripe's deliveries. Authenticated by their signature (so exempt
from CSRF), verified before anything else is read or written: a delivery that does not verify
is answered 400 and changes nothing. A verified one is recorded once
(:func:`portal.integrations.payments.receive_webhook`) and answered 200, a duplicate too
(Stripe stops delivering it); 503 when the event needed Stripe and Stripe did not answer (it
delivers again later)."""

from __future__ import annotations

import logging
from typing import cast

from flask import Blueprint, current_app, jsonify, request
from werkzeug.wrappers import Response

from portal.integrations.payments import GatewayUnavailable, SignatureError, receive_webhook
from portal.web.access import machine_to_machine, public
from stripe_payments.adapter import StripeGateway

log = logging.getLogger(__name__)

bp = Blueprint("stripe_payments", __name__)
MAX_BODY = 512 * 1024  # Stripe's events are a few kilobytes


@bp.route("/webhook", methods=["POST"])
@machine_to_machine
@public
def webhook() -> tuple[Response, int]:
    from stripe_payments import EXTENSION

    gateway = cast(StripeGateway, current_app.extensions[EXTENSION])
    if (request.content_length or 0) > MAX_BODY:
        return jsonify(error="too large"), 413
    body = request.get_data(cache=False)
    try:
        receipt = receive_webhook(gateway, body, dict(request.headers))
    except SignatureError as error:
        log.info("stripe webhook refused: %s", error)
        return jsonify(error="the signature does not verify"), 400
    except GatewayUnavailable as error:
        log.warning("stripe webhook put off: %s", error)
        return jsonify(error="try again later"), 503
    return jsonify(received=receipt.event_id, duplicate=receipt.duplicate), 200
