"""Outgoing mail in development: printed to the console, readable as it would be sent."""

from __future__ import annotations

from typing import Any

import pytest

from portal.features.tenancy import mail
from portal.features.tenancy.models import Partner


def test_the_console_shows_a_non_ascii_mail_readably(
    app_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_factory(PORTAL_MAIL_BACKEND="console")
    partner = Partner(name="Contoso Cloud", support_email="help@contoso.example")
    link = "https://portal.example/reset/abc123"
    body = f"Hola,\n\nRestablece tu contraseña: {link}\n\nContoso Cloud · help@contoso.example\n"
    with app.app_context():
        mail.send(mail.Mail(to="ana@customer.example", subject="Contraseña", text=body), partner)
    printed = capsys.readouterr().err
    assert "----- mail to ana@customer.example -----" in printed
    # the body as written, not base64: the developer can follow the link
    assert link in printed
    assert "Restablece tu contraseña" in printed and "Contoso Cloud · help@" in printed
