"""What a customer's Microsoft identifiers look like (pure: no Flask, no database)."""

from __future__ import annotations

import re
import uuid

# a DNS name of labels of letters, digits and hyphens (contoso.onmicrosoft.com, contoso.com)
DOMAIN = re.compile(r"(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
CANONICAL_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def tenant_id(value: str) -> str | None:
    """A Microsoft Entra tenant id in its canonical form (lowercase 8-4-4-4-12 hex), or None
    when ``value`` is not one. Braces and upper case, as some admin centres show it, are
    accepted; anything else (a domain, a number, 32 bare hex digits) is not."""
    text = (value or "").strip().lower().removeprefix("{").removesuffix("}")
    if not CANONICAL_GUID.fullmatch(text):
        return None
    return str(uuid.UUID(text))


def domain(value: str) -> str | None:
    """A domain name in lower case (``contoso.onmicrosoft.com``), or None when not one."""
    text = (value or "").strip().lower().rstrip(".")
    return text if DOMAIN.fullmatch(text) else None
