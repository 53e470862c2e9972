"""Brand colours: validation and WCAG 2.x contrast, so any partner colour stays readable."""

from __future__ import annotations

import re
from dataclasses import dataclass

HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
AA_NORMAL_TEXT = 4.5
WHITE = "#ffffff"
DARK = "#1b1f24"


def is_hex_colour(value: str) -> bool:
    return HEX_COLOUR.fullmatch(value) is not None


def _channel(c: int) -> float:
    s = c / 255
    return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4


def relative_luminance(colour: str) -> float:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast_ratio(a: str, b: str) -> float:
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def darken(colour: str, factor: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(max(0, int(c * factor)) for c in (r, g, b)))


@dataclass(frozen=True)
class ButtonColours:
    background: str
    text: str
    ratio: float


def readable_button(primary: str) -> ButtonColours:
    """White text on the brand colour if that passes AA; else a darker shade; else dark text."""
    if contrast_ratio(primary, WHITE) >= AA_NORMAL_TEXT:
        return ButtonColours(primary, WHITE, contrast_ratio(primary, WHITE))
    shade = primary
    for _ in range(12):
        shade = darken(shade, 0.9)
        if contrast_ratio(shade, WHITE) >= AA_NORMAL_TEXT and relative_luminance(primary) < 0.35:
            return ButtonColours(shade, WHITE, contrast_ratio(shade, WHITE))
    return ButtonColours(primary, DARK, contrast_ratio(primary, DARK))


# the light text the portal's header writes on the secondary colour (static/css/portal.css)
HEADER_TEXT = "#f8f9fa"


def header_contrast(secondary: str) -> float:
    """The contrast of the header's light text on the secondary colour, its background."""
    return contrast_ratio(secondary, HEADER_TEXT)


def shown_ratio(ratio: float) -> float:
    """A contrast ratio rounded down to hundredths, so a failing 4.499 never reads as 4.5."""
    return int(ratio * 100) / 100


# -- host names -----------------------------------------------------------------------------------

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOST_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*")
# what people paste instead of a host name: a URL, a port, a path
NOT_A_HOST = re.compile(r"://|[:/?#@\s]")


def is_host_name(value: str) -> bool:
    """A DNS host name in lowercase letters, digits and hyphens (no scheme, port or path)."""
    return HOST_NAME.fullmatch(value) is not None


def looks_like_url(value: str) -> bool:
    return NOT_A_HOST.search(value) is not None


# -- logos ----------------------------------------------------------------------------------------

MAX_LOGO_BYTES = 512 * 1024


def image_type(data: bytes) -> str | None:
    """``png``, ``jpeg`` or ``webp`` from the file's first bytes (its magic number), else None.

    SVG is never one: it can carry script. The name and the browser's content type are not
    read: a renamed text file is still text.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None
