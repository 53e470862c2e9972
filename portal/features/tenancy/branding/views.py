"""Brand assets: the partner's CSS variables and the theme's static files."""

from __future__ import annotations

from flask import Blueprint, Response, abort, send_file

from portal.features.tenancy.branding.brand import current_brand
from portal.features.tenancy.branding.themes import themes
from portal.web.access import public

bp = Blueprint("branding", __name__)


@bp.route("/brand.css")
@public
def brand_css() -> Response:
    response = Response(current_brand().css(), mimetype="text/css")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.route("/theme/<path:filename>")
@public
def theme_static(filename: str) -> Response:
    path = themes().static_path(current_brand().slug, filename)
    if path is None:
        abort(404)
    response = send_file(path, max_age=3600)
    return response
