"""The email channel: one SMTP transaction per message, via stdlib smtplib in a thread."""

from __future__ import annotations

import asyncio
import hashlib
import html
import smtplib
import socket
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any
from urllib.parse import urlsplit

from nudge.egress import EgressPolicy, EgressRefused, checked_socket
from nudge.messaging.channels.base import (
    ChannelError,
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    RecipientUnreachable,
    free_form,
)
from nudge.models.channels import EmailConfig
from nudge.models.messages import CardMessage, ImageMessage, TextMessage, plain_text

SUBJECT_LENGTH = 78
LINKABLE_SCHEMES = frozenset({"http", "https", "mailto"})
HTML_PAGE = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>\n'
)

Message = TextMessage | CardMessage | ImageMessage


class EmailChannel:
    """Sends a multipart/alternative (text + HTML) email to the recipient's address."""

    # SMTP servers deliver a second copy of a message: the stable Message-ID lets some mail
    # clients hide it, but nothing on the way drops it. An unknown outcome is recorded as
    # such, never sent again on its own.
    honours_idempotency_key = False

    def __init__(self, config: EmailConfig, egress: EgressPolicy) -> None:
        self._config = config
        self._egress = egress

    async def send(self, outbound: Outbound) -> Receipt:
        address = outbound.recipient.email
        if not address:
            raise RecipientUnreachable(
                f"contact {outbound.recipient.external_id!r} has no email address"
            )
        mail = build_email(outbound, self._config)
        try:
            code, answer = await asyncio.to_thread(self._transmit, mail, address)
        except _AnswerLost as lost:
            server = f"SMTP server {self._config.host}:{self._config.port}"
            raise ProviderUnavailable(
                f"{server} did not answer the message: {lost.__cause__!r}", maybe_delivered=True
            ) from lost
        except OSError as exc:  # smtplib's errors, timeouts and socket errors are all OSErrors
            raise self._channel_error(exc) from exc
        except EgressRefused as exc:
            raise ProviderRejected(str(exc)) from None
        return Receipt({"message_id": mail["Message-ID"], "smtp_code": code, "smtp_answer": answer})

    def _transmit(self, mail: EmailMessage, recipient: str) -> tuple[int, str]:
        """Runs the SMTP dialogue; returns the server's answer to the message data."""
        smtp = self._connect()
        try:
            if self._config.security == "starttls":
                smtp.starttls(context=self._tls_context())
            if self._config.username:
                password = self._config.password.get_secret_value() if self._config.password else ""
                smtp.login(self._config.username, password)
            return _deliver(smtp, str(self._config.from_address), recipient, mail)
        finally:
            _close_quietly(smtp)

    def _connect(self) -> smtplib.SMTP:
        host, port, timeout = self._config.host, self._config.port, self._config.timeout_seconds
        if self._config.security == "tls":
            return _CheckedSMTPSSL(
                self._egress, host, port, timeout=timeout, context=self._tls_context()
            )
        return _CheckedSMTP(self._egress, host, port, timeout=timeout)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self._config.verify_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _channel_error(self, exc: OSError) -> ChannelError:
        server = f"SMTP server {self._config.host}:{self._config.port}"
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, answer = next(iter(exc.recipients.values()))
            return _by_code(code, answer, f"{server} refused the recipient")
        if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
            return ProviderUnavailable(f"{server} unavailable: {exc}")
        if isinstance(exc, smtplib.SMTPResponseException):
            return _by_code(exc.smtp_code, exc.smtp_error, f"{server} refused the message")
        if isinstance(exc, smtplib.SMTPException):
            # e.g. no STARTTLS or AUTH offered: a configuration problem that retries won't fix.
            return ProviderRejected(f"{server}: {exc}")
        return ProviderUnavailable(f"{server} unreachable: {exc!r}")


class _CheckedSMTP(smtplib.SMTP):
    """SMTP to an address the egress policy checked (the name still used for TLS)."""

    def __init__(self, egress: EgressPolicy, *args: Any, **kwargs: Any) -> None:
        self._egress = egress  # before connecting, which the base class does at once
        super().__init__(*args, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return checked_socket(self._egress, host, port, timeout)


class _CheckedSMTPSSL(smtplib.SMTP_SSL):
    def __init__(self, egress: EgressPolicy, *args: Any, **kwargs: Any) -> None:
        self._egress = egress
        super().__init__(*args, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        plain = checked_socket(self._egress, host, port, timeout)
        return self.context.wrap_socket(plain, server_hostname=host)


def _deliver(
    smtp: smtplib.SMTP, sender: str, recipient: str, mail: EmailMessage
) -> tuple[int, str]:
    # smtplib.send_message drops the server's answer to DATA (its queue id), so we
    # run MAIL/RCPT/DATA ourselves, raising the same exceptions send_message would.
    smtp.ehlo_or_helo_if_needed()
    code, answer = smtp.mail(sender)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, answer, sender)
    code, answer = smtp.rcpt(recipient)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({recipient: (code, answer)})
    try:
        code, answer = smtp.data(mail.as_bytes(policy=policy.SMTP))
    except smtplib.SMTPResponseException:
        raise  # an answer: the message was refused
    except OSError as exc:
        # The message was (partly) transmitted and no answer came: it may be delivered.
        raise _AnswerLost() from exc
    if code != 250:
        raise smtplib.SMTPDataError(code, answer)
    return code, answer.decode(errors="replace")


class _AnswerLost(Exception):
    """The server received the message data (or some of it) and its answer was lost."""


def _close_quietly(smtp: smtplib.SMTP) -> None:
    # Once DATA is accepted the message is sent: a failing QUIT must not turn that into an error.
    try:
        smtp.quit()
    except OSError:
        smtp.close()


def _by_code(code: int, answer: bytes | str, what: str) -> ChannelError:
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else answer
    message = f"{what}: {code} {text}"
    response = {"smtp_code": code, "smtp_answer": text}
    if code >= 500:
        return ProviderRejected(message, response=response)
    return ProviderUnavailable(message, response=response)


def build_email(outbound: Outbound, config: EmailConfig) -> EmailMessage:
    """The message as it goes on the wire: text and HTML alternatives of the same content."""
    recipient = outbound.recipient
    content = free_form(outbound.message)
    mail = EmailMessage()
    mail["From"] = formataddr((config.from_name, str(config.from_address)))
    mail["To"] = formataddr((recipient.name, recipient.email or ""))
    mail["Subject"] = subject(content)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = message_id(outbound.idempotency_key, str(config.from_address))
    mail["X-Nudge-Idempotency-Key"] = outbound.idempotency_key
    mail.set_content(plain_text(content))
    mail.add_alternative(render_html(content), subtype="html")
    return mail


def message_id(idempotency_key: str, from_address: str) -> str:
    """The same for every retry of one send, so receiving systems can drop a duplicate."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    # The sender's domain on the right: spam filters penalise ids without a real domain.
    domain = from_address.rpartition("@")[2] or "nudge"
    return f"<{digest}@{domain}>"


def subject(message: Message) -> str:
    if isinstance(message, CardMessage):
        return _one_line(message.card.title)
    if isinstance(message, ImageMessage):
        return _one_line(message.image.caption) or "Image"
    first_line = next((line for line in message.text.splitlines() if line.strip()), "")
    line = _one_line(first_line)
    return line if len(line) <= SUBJECT_LENGTH else line[: SUBJECT_LENGTH - 1] + "…"


def _one_line(text: str) -> str:
    # Header values may not contain line breaks; rendered templates sometimes do.
    return " ".join(text.split())


def render_html(message: Message) -> str:
    if isinstance(message, CardMessage):
        body = _card_html(message)
    elif isinstance(message, ImageMessage):
        body = _image_html(message.image.url, message.image.caption)
    else:
        body = _paragraphs(message.text)
    return HTML_PAGE.format(body=body)


def _card_html(message: CardMessage) -> str:
    card = message.card
    parts = [f"<h2>{html.escape(card.title)}</h2>", _paragraphs(card.text)]
    if card.image_url:
        parts.append(_image_html(card.image_url, ""))
    for button in card.buttons:
        parts.append(f"<p>{_link(button.url, button.label)}</p>")
    return "\n".join(part for part in parts if part)


def _image_html(url: str, caption: str) -> str:
    if not _linkable(url):
        return f"<p>{html.escape(url)}</p>"
    image = f'<p><img src="{html.escape(url)}" alt="{html.escape(caption)}"></p>'
    return image + ("\n" + _paragraphs(caption) if caption else "")


def _link(url: str | None, label: str) -> str:
    if url is None or not _linkable(url):
        return html.escape(label)
    return f'<a href="{html.escape(url)}">{html.escape(label)}</a>'


def _linkable(url: str) -> bool:
    # Rendered URLs can carry record data; only let plain web and mail addresses become links.
    return urlsplit(url).scheme.lower() in LINKABLE_SCHEMES


def _paragraphs(text: str) -> str:
    blocks = [block.strip() for block in text.replace("\r\n", "\n").split("\n\n")]
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in block.split("\n")) + "</p>"
        for block in blocks
        if block
    )
