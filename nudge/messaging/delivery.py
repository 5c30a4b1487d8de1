"""Sending one rendered message effectively once: claim the key, send, record.

Shared by notifications, follow-up attempts and journey steps.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from nudge.egress import EgressPolicy
from nudge.messaging.channels.base import ChannelError, Outbound
from nudge.messaging.channels.registry import build_sender
from nudge.models.db import transaction
from nudge.models.messages import plain_text
from nudge.models.tables import Channel, Contact, Delivery, Message
from nudge.security import SecretBox
from nudge.store import deliveries
from nudge.store.directory import channel_credentials

log = logging.getLogger(__name__)

AfterSent = Callable[[AsyncSession, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Sent:
    delivery_id: str
    already_sent: bool


class Deliverer:
    """Sends through a tenant's channel; a retried call never sends what was accepted."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        http: httpx.AsyncClient,
        egress: EgressPolicy,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._egress = egress
        self._http = http

    async def deliver(
        self,
        *,
        tenant_id: str,
        contact: Contact,
        channel: Channel,
        outbound: Outbound,
        after_sent: AfterSent | None = None,
    ) -> Sent:
        delivery = await self._claim(tenant_id, contact, channel, outbound.idempotency_key)
        already_sent = delivery.status == "sent"
        if not already_sent:
            if delivery.tries > 1 and delivery.status == "sending":
                # An earlier try died between calling the provider and recording its answer.
                # Sending again with the same idempotency key lets the provider drop the copy.
                log.warning("resending %s after an interrupted try", outbound.idempotency_key)
            await self._send(delivery, channel, outbound)
        await self._record(delivery.id, contact, outbound, after_sent)
        return Sent(delivery_id=delivery.id, already_sent=already_sent)

    async def _claim(
        self, tenant_id: str, contact: Contact, channel: Channel, idempotency_key: str
    ) -> Delivery:
        """The delivery for this key, committed before any provider is called."""
        try:
            async with transaction(self._sessions) as session:
                return await deliveries.add_delivery(
                    session,
                    tenant_id=tenant_id,
                    idempotency_key=idempotency_key,
                    contact_id=contact.id,
                    channel=channel.slug,
                )
        except IntegrityError:
            pass  # a retry: an earlier try claimed the key
        async with transaction(self._sessions) as session:
            return await deliveries.retry_delivery(session, idempotency_key)

    async def _send(self, delivery: Delivery, channel: Channel, outbound: Outbound) -> None:
        sender = build_sender(
            channel.type,
            channel.config,
            channel_credentials(channel, self._box),
            self._http,
            self._egress,
        )
        try:
            receipt = await sender.send(outbound)
        except ChannelError as exc:
            async with transaction(self._sessions) as session:
                await deliveries.mark_not_sent(
                    session,
                    delivery.id,
                    error=str(exc),
                    response=exc.response,
                    final=not exc.retryable,
                )
            raise ApplicationError(
                f"{channel.slug}: {exc}", type=type(exc).__name__, non_retryable=not exc.retryable
            ) from exc
        async with transaction(self._sessions) as session:
            await deliveries.mark_sent(session, delivery.id, receipt.response)

    async def _record(
        self,
        delivery_id: str,
        contact: Contact,
        outbound: Outbound,
        after_sent: AfterSent | None,
    ) -> None:
        """History and the caller's bookkeeping, in one transaction, idempotent on retry."""
        async with transaction(self._sessions) as session:
            delivery = await session.get_one(Delivery, delivery_id)
            message = Message(
                tenant_id=delivery.tenant_id,
                contact_id=contact.id,
                direction="outgoing",
                channel=delivery.channel,
                kind=outbound.message.kind,
                text=plain_text(outbound.message),
                body=outbound.message.model_dump(mode="json", exclude_none=True),
                source=outbound.source,
            )
            await deliveries.record_outgoing(session, delivery, message)
            if after_sent is not None:
                await after_sent(session, delivery)
