"""Sending one rendered message effectively once: claim the key, send, record.

Shared by notifications, follow-up attempts, journey steps and operators' resends.

A try first claims the send's idempotency key, which takes a lease: while it is live no
other try calls the provider for that key (a retry that finds it fails, retryably, without
sending). A retry that finds an earlier try's claim with no recorded outcome (the worker
died, or recording failed, after the provider may have taken the message) sends again only
on channels whose provider drops a copy with the same key; on the others it records the
send `unknown` and sends nothing, until an operator resends it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from nudge.egress import EgressPolicy
from nudge.integrations.calls import heartbeating
from nudge.messaging.channels.base import ChannelError, ChannelSender, Outbound
from nudge.messaging.channels.registry import build_sender
from nudge.models.db import transaction
from nudge.models.messages import plain_text
from nudge.models.tables import Channel, Contact, Delivery, Message, utcnow
from nudge.security import SecretBox
from nudge.store import deliveries
from nudge.store.deliveries import DELIVERED_STATES, Claim
from nudge.store.directory import channel_credentials

log = logging.getLogger(__name__)

T = TypeVar("T")

AfterSent = Callable[[AsyncSession, Delivery], Awaitable[None]]
OnClaim = Callable[[AsyncSession], Awaitable[None]]

# A try holds its lease this long and renews it while the provider is being waited on:
# a live try keeps it however slow the provider, a dead one loses it within this time.
LEASE = timedelta(seconds=30)
LEASE_RENEWAL = timedelta(seconds=10)
UNKNOWN_REASON = (
    "an earlier try may have reached the provider, which does not drop copies:"
    " not sent again (an operator can resend it)"
)

UNKNOWN_LOST = (
    "the provider's answer was lost after the message left, and it does not drop copies:"
    " not sent again (an operator can resend it)"
)


@dataclass(frozen=True)
class Sent:
    delivery_id: str
    already_sent: bool
    # `sent`, or `unknown`: an earlier try's outcome is unknown and it was not sent again.
    status: str = "sent"

    @property
    def unknown(self) -> bool:
        return self.status == "unknown"


def outbound_json(outbound: Outbound) -> dict[str, Any]:
    """What a delivery keeps of its message, enough to resend it as it was meant."""
    return {
        "recipient": dataclasses.asdict(outbound.recipient),
        "message": outbound.message.model_dump(mode="json", exclude_none=True),
        "source": outbound.source,
    }


class Deliverer:
    """Sends through a tenant's channel; a retried call never sends what was accepted."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        http: httpx.AsyncClient,
        egress: EgressPolicy,
        lease: timedelta = LEASE,
        lease_renewal: timedelta = LEASE_RENEWAL,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._egress = egress
        self._http = http
        self._lease = lease
        self._lease_renewal = lease_renewal

    async def deliver(
        self,
        *,
        tenant_id: str,
        contact: Contact,
        channel: Channel,
        outbound: Outbound,
        after_sent: AfterSent | None = None,
        on_claim: OnClaim | None = None,
    ) -> Sent:
        """Send ``outbound`` once. ``on_claim`` runs in the claim's transaction, before the
        provider is called (what a reply must find); ``after_sent`` in the one that records
        the outcome. Raises ``ApplicationError`` (retryable unless the failure is final)."""
        sender = build_sender(
            channel.type,
            channel.config,
            channel_credentials(channel, self._box),
            self._http,
            self._egress,
        )
        claim = await self._claim(
            tenant_id,
            contact,
            channel,
            outbound,
            self._lease,
            on_claim,
        )
        delivery = claim.delivery
        if not claim.leased:
            return await self._as_found(claim, contact, outbound, after_sent)
        if claim.outcome_unknown:
            if not sender.honours_idempotency_key:
                log.warning("%s: outcome unknown, not sent again", outbound.idempotency_key)
                async with transaction(self._sessions) as session:
                    await deliveries.mark_unknown(session, delivery.id, UNKNOWN_REASON)
                await self._record(delivery.id, contact, outbound, after_sent)
                return Sent(delivery_id=delivery.id, already_sent=False, status="unknown")
            # The provider drops the copy if the earlier try reached it.
            log.warning("resending %s after an interrupted try", outbound.idempotency_key)
        status = await self._send(delivery, channel, sender, outbound)
        await self._record(delivery.id, contact, outbound, after_sent)
        return Sent(delivery_id=delivery.id, already_sent=False, status=status)

    async def _claim(
        self,
        tenant_id: str,
        contact: Contact,
        channel: Channel,
        outbound: Outbound,
        lease: timedelta,
        on_claim: OnClaim | None,
    ) -> Claim:
        """The delivery for this key, committed before any provider is called."""
        try:
            async with transaction(self._sessions) as session:
                delivery = await deliveries.add_delivery(
                    session,
                    tenant_id=tenant_id,
                    idempotency_key=outbound.idempotency_key,
                    contact_id=contact.id,
                    channel=channel.slug,
                    lease=lease,
                    outbound=outbound_json(outbound),
                )
                if on_claim is not None:
                    await on_claim(session)
                return Claim(delivery, leased=True, previous_status=None)
        except IntegrityError:
            pass  # a retry: an earlier try claimed the key
        async with transaction(self._sessions) as session:
            claim = await deliveries.claim_again(session, outbound.idempotency_key, lease)
            if on_claim is not None:
                await on_claim(session)
            return claim

    async def _as_found(
        self, claim: Claim, contact: Contact, outbound: Outbound, after_sent: AfterSent | None
    ) -> Sent:
        """A claim that did not get the lease: the outcome an earlier try left, or a try in
        flight that this one must not run beside."""
        delivery = claim.delivery
        if delivery.status in DELIVERED_STATES or delivery.status == "unknown":
            await self._record(delivery.id, contact, outbound, after_sent)
            return Sent(
                delivery_id=delivery.id,
                already_sent=delivery.status != "unknown",
                status="unknown" if delivery.status == "unknown" else "sent",
            )
        if delivery.status in deliveries.FINAL_STATES:
            raise ApplicationError(
                f"{delivery.channel}: {delivery.error or delivery.status}",
                type="DeliveryFailed",
                non_retryable=True,
            )
        wait = (claim.lease_ends - utcnow()) if claim.lease_ends else timedelta(seconds=1)
        raise ApplicationError(
            f"{delivery.channel}: another try is sending {outbound.idempotency_key};"
            " trying again when its lease ends",
            type="DeliveryInFlight",
            non_retryable=False,
            next_retry_delay=max(wait, timedelta(seconds=1)),
        )

    async def _send(
        self, delivery: Delivery, channel: Channel, sender: ChannelSender, outbound: Outbound
    ) -> str:
        """`sent`, or `unknown` when the provider's answer was lost and a retry could make
        a copy; raises ``ApplicationError`` when the provider did not take it."""
        try:
            receipt = await heartbeating(self._holding_lease(delivery, sender.send(outbound)))
        except ChannelError as exc:
            if exc.maybe_delivered and not sender.honours_idempotency_key:
                log.warning("%s: answer lost, not sent again: %s", outbound.idempotency_key, exc)
                async with transaction(self._sessions) as session:
                    await deliveries.mark_unknown(session, delivery.id, f"{UNKNOWN_LOST}: {exc}")
                return "unknown"
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
        return "sent"

    async def _holding_lease(self, delivery: Delivery, call: Awaitable[T]) -> T:
        """``call``'s result; meanwhile the lease is renewed, so no other try sends."""
        task = asyncio.ensure_future(call)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._lease_renewal.total_seconds())
                if done:
                    return task.result()
                try:
                    async with transaction(self._sessions) as session:
                        await deliveries.renew_lease(
                            session, delivery.id, delivery.tries, self._lease
                        )
                except Exception:
                    # The send goes on: cutting it off would not take back what it sent.
                    log.warning("could not renew the lease of %s", delivery.id, exc_info=True)
        finally:
            if not task.done():
                task.cancel()

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
