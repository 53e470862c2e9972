"""Safe ``next`` redirects: only paths on this site, never another origin."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


def safe_next(target: str | None, default: str) -> str:
    if not target or len(target) > 2000:
        return default
    decoded = target
    for _ in range(3):  # undo layered percent-encoding before judging
        decoded = unquote(decoded)
    if any(ord(ch) < 32 or ch == "\\" for ch in decoded):
        return default
    if not target.startswith("/") or decoded.startswith("//"):
        return default
    parts = urlsplit(decoded)
    if parts.scheme or parts.netloc:
        return default
    return target
