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
