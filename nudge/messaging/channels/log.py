"""The development channel: writes each message to the worker's log."""

from __future__ import annotations

import logging

from nudge.messaging.channels.base import Outbound, Receipt
from nudge.models.channels import LogConfig
from nudge.models.messages import plain_text

logger = logging.getLogger("nudge.channels.log")


class LogChannel:
    """Logs one INFO line per message; never fails."""

    # A repeated line in a development log harms no one and carries the same key, so an
    # unknown outcome is simply logged again.
    honours_idempotency_key = True

    def __init__(self, config: LogConfig | None = None) -> None:
        self._config = config or LogConfig()

    async def send(self, outbound: Outbound) -> Receipt:
        # %r keeps user-provided text on one line and escapes control characters.
        logger.info(
            "tenant=%s channel=%s recipient=%r key=%s text=%r",
            outbound.tenant,
            outbound.channel,
            outbound.recipient.external_id,
            outbound.idempotency_key,
            plain_text(outbound.message),
        )
        return Receipt({"logged": True})
