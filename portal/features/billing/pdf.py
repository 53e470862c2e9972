"""An invoice as PDF: the page's own HTML (the same document template) printed by WeasyPrint.

WeasyPrint fetches the stylesheets and the logo the HTML names. It never goes to the network
here: :class:`LocalAssets` answers the app's own URLs (``/static/…``, the partner theme's
``/theme/…`` and ``/brand.css``) from disk or memory and refuses every other URL, so a
partner's data can never make the server fetch anything.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import (
    current_app,
    g,
    request,
    send_file,
)
from weasyprint import HTML
from weasyprint.urls import URLFetcher, URLFetcherResponse
from werkzeug.wrappers import Response as BaseResponse

from portal.features.tenancy.branding.brand import Brand
from portal.features.tenancy.branding.themes import themes

CONTENT_TYPES = {
    ".css": "text/css",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
# invoice numbers are made by the service; anything else in a file name is replaced
UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class LocalAssets(URLFetcher):  # type: ignore[misc]
    """Serves the document's own assets without HTTP; any other URL is refused.

    ``static_dir`` is the app's static folder; ``theme_file`` maps a theme file name to its
    path (or None); ``brand_css`` is the partner's colours as CSS.
    """

    def __init__(
        self,
        static_dir: Path,
        theme_file: Callable[[str], Path | None],
        brand_css: str,
    ) -> None:
        super().__init__(allowed_protocols=("http", "https"), allow_redirects=False)
        self.static_dir = static_dir.resolve()
        self.theme_file = theme_file
        self.brand_css = brand_css

    def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
        path = unquote(urlsplit(url).path)
        if path == "/brand.css":
            return URLFetcherResponse(url, self.brand_css, {"Content-Type": "text/css"})
        if path.startswith("/static/"):
            found = _inside(self.static_dir, path.removeprefix("/static/"))
        elif path.startswith("/theme/"):
            found = self.theme_file(path.removeprefix("/theme/"))
        else:
            found = None
        if found is None:
            raise ValueError(f"not one of the document's own assets: {url}")
        content_type = CONTENT_TYPES.get(found.suffix.lower(), "application/octet-stream")
        return URLFetcherResponse(url, found.read_bytes(), {"Content-Type": content_type})


def _inside(root: Path, relative: str) -> Path | None:
    candidate = (root / relative).resolve()
    return candidate if root in candidate.parents and candidate.is_file() else None


def render_pdf(html: str, base_url: str, assets: LocalAssets) -> bytes:
    """The PDF of ``html`` (a whole document whose print stylesheet has the ``@page`` rules)."""
    document: bytes = HTML(string=html, base_url=base_url, url_fetcher=assets).write_pdf()
    return document


def pdf_file_name(number: str) -> str:
    """``invoice-<number>.pdf`` with only letters, digits, dot, dash and underscore."""
    safe = UNSAFE_IN_FILE_NAME.sub("-", number).strip("-.") or "invoice"
    return f"invoice-{safe}.pdf"


def pdf_response(html: str, number: str) -> BaseResponse:
    """The PDF of a rendered invoice document, as a download with a safe file name."""
    brand: Brand = g.brand
    assert current_app.static_folder is not None
    assets = LocalAssets(
        static_dir=Path(current_app.static_folder),
        theme_file=lambda name: themes().static_path(brand.slug, name),
        brand_css=brand.css(),
    )
    document = render_pdf(html, request.host_url, assets)
    return send_file(
        io.BytesIO(document),
        mimetype="application/pdf",
        as_attachment=True,
        download_name=pdf_file_name(number),
        conditional=False,
        etag=False,
        last_modified=None,
        max_age=None,
    )
