"""The partner brand of a request: resolved from the Host header, shown through data first
(name, logo, colours) and optionally through a per-partner theme folder."""

from portal.features.tenancy.branding.brand import Brand, current_brand
from portal.features.tenancy.branding.themes import brand_static, render_page

__all__ = ["Brand", "brand_static", "current_brand", "render_page"]
