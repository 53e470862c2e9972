"""Safe `next` redirects: anything that could leave the site falls back to the default."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from portal.web.redirects import safe_next


def test_site_paths_are_kept() -> None:
    assert safe_next("/account/", "/") == "/account/"
    assert safe_next("/invoices?page=2", "/") == "/invoices?page=2"


def test_other_origins_are_refused() -> None:
    for target in [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "javascript:x",
        "/%2f%2fevil.example",
        "/%252f%252fevil.example",
        "\x00/evil",
        "",
    ]:
        assert safe_next(target, "/home") == "/home", target


@given(st.text(max_size=60))
def test_whatever_comes_in_the_result_has_no_host(target: str) -> None:
    result = safe_next(target, "/")
    assert result.startswith("/") and not result.startswith("//")
    assert urlsplit(result).netloc == "" and urlsplit(result).scheme == ""
    assert "\\" not in result
