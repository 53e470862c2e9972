"""The staff area's catalogue and licence change queue (being built)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("staff_licences", __name__, url_prefix="/staff")
