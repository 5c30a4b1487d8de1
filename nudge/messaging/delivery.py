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
from nudge.messaging.channels.base import (
    ChannelError,
    ChannelSender,
    Outbound,
    ProviderRejected,
    Receipt,
)
from nudge.messaging.channels.registry import build_sender
from nudge.models.db import read_only, transaction
from nudge.models.messages import AnyMessage, WhatsAppTemplateMessage, plain_text
from nudge.models.tables import Channel, Contact, Delivery, Message, utcnow
from nudge.security import SecretBox
from nudge.store import deliveries, receipts
from nudge.store.deliveries import DELIVERED_STATES, Claim
from nudge.store.directory import channel_credentials, find_channel

log = logging.getLogger(__name__)

T = TypeVar("T")

AfterSent = Callable[[AsyncSession, Delivery], Awaitable[None]]
# Stages (in the session's transaction) the check that tries the next fallback channel
# when the delivery is not delivered within the minutes given.
WatchFallback = Callable[[AsyncSession, Delivery, Channel, str, int], None]
OnClaim = Callable[[AsyncSession], Awaitable[None]]

# A try holds its lease this long and renews it while the provider is being waited on:
# a live try keeps it however slow the provider, a dead one loses it within this time.
LEASE = timedelta(seconds=30)
LEASE_RENEWAL = timedelta(seconds=10)
UNKNOWN_REASON = (
    "an earlier try may have reached the provider, which does not drop copies:"
    " not sent again (an operator can resend it)"
)

# WhatsApp's customer-service window after a contact's message.
SERVICE_WINDOW = timedelta(hours=24)
FALLBACK_SEPARATOR = "#fallback:"

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


def webhook_url(public_url: str, tenant: str, channel: str) -> str:
    """Where a channel's provider posts receipts and incoming messages."""
    return f"{public_url.rstrip('/')}/v1/webhooks/{tenant}/{channel}"


def _fallback_key(key: str, slug: str, first: str) -> str:
    """The idempotency key of the try on ``slug`` of a send first tried on ``first``."""
    return key if slug == first else f"{key}{FALLBACK_SEPARATOR}{slug}"


class Refusing:
    """A sender that refuses for good without calling anyone: the send cannot go (outside
    WhatsApp's window), and that is recorded on its delivery like a provider's refusal."""

    honours_idempotency_key = True

    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def send(self, outbound: Outbound) -> Receipt:
        raise ProviderRejected(self._reason)


def template_of(message: AnyMessage) -> str:
    """How metrics name the message: the WhatsApp template's name, else its kind."""
    if isinstance(message, WhatsAppTemplateMessage):
        return message.template.name
    return message.kind


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
        public_url: str | None = None,
        watch_fallback: WatchFallback | None = None,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._egress = egress
        self._http = http
        self._lease = lease
        self._lease_renewal = lease_renewal
        self._public_url = public_url
        self._watch_fallback = watch_fallback

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
        the outcome. Raises ``ApplicationError`` (retryable unless the failure is final).

        A send that fails for good goes on to the channel's `fallback` channels in order,
        each tried once (its own delivery, keyed after this one's and linked to the try
        before it), until one takes it."""
        try:
            return await self._deliver_on(
                tenant_id, contact, channel, outbound, after_sent, on_claim, fallback_of=None
            )
        except ApplicationError as failure:
            if failure.non_retryable is False or not channel.fallback:
                raise
            return await self._fall_back(
                tenant_id, contact, channel, outbound, after_sent, on_claim, failure
            )

    async def fall_back_from(
        self,
        *,
        tenant_id: str,
        contact: Contact,
        channel: Channel,
        outbound: Outbound,
        after: str,
    ) -> Sent | None:
        """The next fallback try after the channel ``after`` (a slug of ``channel``'s
        fallback list, or ``channel`` itself): for a send that was not delivered in time.
        None when no fallback channel is left."""
        chain = [channel.slug, *(channel.fallback or [])]
        rest = chain[chain.index(after) + 1 :] if after in chain else []
        if not rest:
            return None
        previous_key = _fallback_key(outbound.idempotency_key, after, channel.slug)
        return await self._try_fallbacks(
            tenant_id, contact, outbound, None, None, rest, previous_key
        )

    async def _fall_back(
        self,
        tenant_id: str,
        contact: Contact,
        channel: Channel,
        outbound: Outbound,
        after_sent: AfterSent | None,
        on_claim: OnClaim | None,
        failure: ApplicationError,
    ) -> Sent:
        sent = await self._try_fallbacks(
            tenant_id,
            contact,
            outbound,
            after_sent,
            on_claim,
            list(channel.fallback or []),
            outbound.idempotency_key,
        )
        if sent is None:
            raise failure
        return sent

    async def _try_fallbacks(
        self,
        tenant_id: str,
        contact: Contact,
        outbound: Outbound,
        after_sent: AfterSent | None,
        on_claim: OnClaim | None,
        slugs: list[str],
        previous_key: str,
    ) -> Sent | None:
        """The first of ``slugs`` that takes the message; None when none does (retryable
        failures are raised: the activity's retry comes back here by the same keys)."""
        for slug in slugs:
            async with read_only(self._sessions)() as session:
                next_channel = await find_channel(session, tenant_id, slug)
                previous = await deliveries.find_by_key(session, previous_key)
            if next_channel is None:
                log.warning("fallback channel %r of %s does not exist", slug, outbound.channel)
                continue
            key = f"{outbound.idempotency_key}{FALLBACK_SEPARATOR}{slug}"
            try:
                return await self._deliver_on(
                    tenant_id,
                    contact,
                    next_channel,
                    dataclasses.replace(outbound, channel=slug, idempotency_key=key),
                    after_sent,
                    on_claim,
                    fallback_of=previous.id if previous is not None else None,
                )
            except ApplicationError as failure:
                if failure.non_retryable is False:
                    raise
                previous_key = key
        return None

    async def _deliver_on(
        self,
        tenant_id: str,
        contact: Contact,
        channel: Channel,
        outbound: Outbound,
        after_sent: AfterSent | None,
        on_claim: OnClaim | None,
        fallback_of: str | None,
    ) -> Sent:
        outbound, refusal = await self._for_channel(channel, contact, outbound)
        sender: ChannelSender = (
            Refusing(refusal)
            if refusal is not None
            else build_sender(
                channel.type,
                channel.config,
                channel_credentials(channel, self._box),
                self._http,
                self._egress,
            )
        )
        claim = await self._claim(
            tenant_id,
            contact,
            channel,
            outbound,
            self._lease,
            on_claim,
            fallback_of,
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
        fallback_of: str | None = None,
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
                    fallback_of=fallback_of,
                    belongs_to=outbound.belongs_to,
                    template=template_of(outbound.message),
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
            await deliveries.mark_sent(
                session,
                delivery.id,
                receipt.response,
                provider_message_id=receipt.provider_message_id,
                segments=receipt.segments,
            )
            if receipt.provider_message_id is not None:
                delivery = await session.get_one(Delivery, delivery.id, populate_existing=True)
                await receipts.apply_waiting(session, delivery)
            if (
                channel.fallback_after_minutes is not None
                and channel.fallback
                and delivery.fallback_of is None
                and self._watch_fallback is not None
            ):
                # In the transaction that says `sent`: the watch cannot be lost in a crash.
                # Only a first try is watched: its watch follows the whole fallback list.
                self._watch_fallback(
                    session, delivery, channel, outbound.tenant, channel.fallback_after_minutes
                )
        return "sent"

    async def _for_channel(
        self, channel: Channel, contact: Contact, outbound: Outbound
    ) -> tuple[Outbound, str | None]:
        """The message as this channel can take it, and why it cannot at all (or None).

        WhatsApp takes free-form messages only within 24 hours of the contact's last
        message on that number; outside, the message's `outside_window` template goes
        instead, and without one the send fails for good. SMS gets Nudge's receipt URL.
        """
        if channel.type == "sms" and self._public_url is not None:
            outbound = dataclasses.replace(
                outbound,
                status_callback_url=webhook_url(self._public_url, outbound.tenant, channel.slug),
            )
        if channel.type != "whatsapp" or isinstance(outbound.message, WhatsAppTemplateMessage):
            return outbound, None
        async with read_only(self._sessions)() as session:
            last = await receipts.last_incoming_at(session, contact.id, channel.slug)
        if last is not None and utcnow() - last < SERVICE_WINDOW:
            return outbound, None
        template = outbound.message.outside_window
        if template is None:
            return outbound, (
                "outside WhatsApp's 24-hour customer-service window (the contact has not"
                " written to this number in the last 24 hours): only a template may be sent,"
                " and the message gives none in `outside_window`"
            )
        as_template = WhatsAppTemplateMessage.model_construct(
            kind="whatsapp_template", template=template
        )
        return dataclasses.replace(outbound, message=as_template), None

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
