"""DEVELOPMENT ONLY: `nudge dev`'s sample providers and the demo tenant's channels on them.

`nudge dev` runs the fake WhatsApp Cloud API and the fake Twilio (``nudge.dev.fake_whatsapp``,
``nudge.dev.fake_twilio``) in its own process, each on a loopback port of its own, posting the
receipts ``sent``, ``delivered`` and ``read`` for every message they accept. The demo tenant's
`whatsapp` and `sms` channels are pointed at them through the public API, as a tenant admin
would configure a real provider, and each fake is given the channel's `webhook_url`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from nudge.dev.fake_twilio import FakeTwilio
from nudge.dev.fake_whatsapp import FakeWhatsApp

WHATSAPP_CHANNEL = "whatsapp"
SMS_CHANNEL = "sms"
AUTO_RECEIPTS = ("sent", "delivered", "read")
# What the Meta app would be told as the webhook's verify token; the fake never asks.
VERIFY_TOKEN = "demo-verify-token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TIMEOUT_SECONDS = 10.0


class SampleProviders:
    """The two fakes, and the demo tenant's channels that use them."""

    def __init__(self) -> None:
        # Port 0: the kernel gives each a free loopback port when it starts.
        self.whatsapp = FakeWhatsApp(port=0)
        self.twilio = FakeTwilio()
        self.whatsapp.auto_receipts = AUTO_RECEIPTS
        self.twilio.auto_receipts = AUTO_RECEIPTS
        # The channels pointed at the fakes (a channel the tenant pointed elsewhere is left).
        self.wired: set[str] = set()
        self._started = False

    def start(self) -> None:
        self.whatsapp.start()
        try:
            self.twilio.start()
        except BaseException:
            self.whatsapp.stop()
            raise
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.twilio.stop()
            self.whatsapp.stop()

    def channel_bodies(self) -> dict[str, dict[str, Any]]:
        """`PUT /v1/channels/{id}` bodies for the demo channels, in the order to put them."""
        sms = {
            "type": "sms",
            "config": {
                "account_sid": self.twilio.account_sid,
                "auth_token": self.twilio.auth_token,
                "from": self.twilio.numbers[0],
                "base_url": self.twilio.base_url,
            },
        }
        whatsapp = {
            "type": "whatsapp",
            "config": {
                "phone_number_id": self.whatsapp.phone_number_id,
                "access_token": self.whatsapp.access_token,
                "app_secret": self.whatsapp.app_secret,
                "verify_token": VERIFY_TOKEN,
                "api_version": self.whatsapp.api_version,
                "base_url": self.whatsapp.base_url,
            },
        }
        return {SMS_CHANNEL: sms, WHATSAPP_CHANNEL: whatsapp}

    def wire(self, api_url: str, key: str) -> set[str]:
        """Point the demo channels at the fakes (their ports change at every start) and give
        each fake its channel's webhook URL; the channels wired.

        A channel the tenant has pointed at a real provider (a base URL that is not on this
        machine) is left as it is, and its fake stays unused.
        """
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=api_url, headers=headers, timeout=TIMEOUT_SECONDS) as api:
            for slug, body in self.channel_bodies().items():
                existing = api.get(f"/v1/channels/{slug}")
                if existing.status_code != 404 and not is_sample_channel(
                    existing.raise_for_status().json(), body["type"]
                ):
                    continue
                if slug == WHATSAPP_CHANNEL and SMS_CHANNEL in self.wired:
                    # A WhatsApp send that cannot go (outside the 24-hour window, with no
                    # template) goes by SMS instead.
                    body = {**body, "fallback": [SMS_CHANNEL]}
                channel = api.put(f"/v1/channels/{slug}", json=body).raise_for_status().json()
                self._give_webhook_url(slug, channel["webhook_url"])
                self.wired.add(slug)
        return self.wired

    def banner_rows(self) -> list[tuple[str, str]]:
        rows = [
            (
                "WhatsApp (fake)",
                f"{self.whatsapp.base_url}, a fake Meta Cloud API (development only)"
                + self._serves(WHATSAPP_CHANNEL, f"+{self.whatsapp.display_phone_number}"),
            ),
            (
                "SMS (fake)",
                f"{self.twilio.base_url}, a fake Twilio (development only)"
                + self._serves(SMS_CHANNEL, self.twilio.numbers[0]),
            ),
        ]
        return rows

    def _serves(self, slug: str, number: str) -> str:
        if slug not in self.wired:
            return f"; channel {slug} calls another provider, left as it is"
        return f": channel {slug}, number {number}"

    def _give_webhook_url(self, slug: str, url: str) -> None:
        if slug == WHATSAPP_CHANNEL:
            self.whatsapp.webhook_url = url  # the callback URL of the Meta app
        else:
            self.twilio.inbound_url = url  # the number's "A message comes in" webhook


def is_sample_channel(channel: dict[str, Any], channel_type: str) -> bool:
    """Whether a channel (as `GET /v1/channels/{id}` answers it) is a sample one: of this
    type, and calling a provider on this machine."""
    if channel.get("type") != channel_type:
        return False
    base_url = channel.get("config", {}).get("base_url")
    return isinstance(base_url, str) and urlsplit(base_url).hostname in LOOPBACK_HOSTS
