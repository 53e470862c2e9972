"""Outgoing mail: SMTP in production and tests, the console in development."""

from __future__ import annotations

import smtplib
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from flask import current_app, render_template

from portal.core.extensions import rendering_in
from portal.features.tenancy.models import Partner


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str


def render_mail(template: str, partner: Partner, locale: str | None, **context: object) -> Mail:
    """Render ``templates/email/<template>.txt``; its first line is the subject."""
    with rendering_in(locale or "en"):
        body = render_template(f"email/{template}.txt", partner=partner, **context)
    subject, _, text = body.partition("\n")
    return Mail(to=str(context.get("to", "")), subject=subject.strip(), text=text.lstrip("\n"))


def send(mail: Mail, partner: Partner) -> None:
    config = current_app.config
    message = EmailMessage()
    message["From"] = formataddr((partner.name, config["PORTAL_MAIL_FROM"]))
    message["To"] = mail.to
    message["Reply-To"] = partner.support_email
    message["Subject"] = mail.subject
    message["Message-ID"] = make_msgid(domain=config["PORTAL_MAIL_FROM"].rpartition("@")[2] or None)
    message.set_content(mail.text)
    if config["PORTAL_MAIL_BACKEND"] == "smtp":
        _send_smtp(message)
    else:
        # development: the message (with its link) is printed where `make run` shows it, as
        # sent (8-bit UTF-8): str() would re-encode a non-ASCII body to unreadable base64
        text = message.as_bytes().decode("utf-8", errors="replace")
        print(f"\n----- mail to {mail.to} -----\n{text}\n----- end of mail -----", file=sys.stderr)


def _send_smtp(message: EmailMessage) -> None:
    config = current_app.config
    with smtplib.SMTP(config["PORTAL_MAIL_SERVER"], config["PORTAL_MAIL_PORT"], timeout=10) as smtp:
        if config["PORTAL_MAIL_USE_TLS"]:
            smtp.starttls()
        if config["PORTAL_MAIL_USERNAME"]:
            smtp.login(config["PORTAL_MAIL_USERNAME"], config["PORTAL_MAIL_PASSWORD"])
        smtp.send_message(message)
