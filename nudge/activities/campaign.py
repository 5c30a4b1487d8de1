"""A campaign's activities: its plan, a batch of sends, and its end.

A batch sends the next queued rows, each under the key `campaign:<id>:<line>`, so a batch
retried after a worker died sends nothing twice: rows already sent are no longer queued,
and a row whose send was in flight is found by its key. The stored status is read before
every send: once a pause or cancel is acknowledged, no send starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from nudge.messaging.channels.base import Outbound
from nudge.messaging.contacts import contact_context, recipient_of
from nudge.messaging.delivery import Deliverer
from nudge.models.db import read_only, transaction
from nudge.models.messages import AnyMessage, parse_message, render_message
from nudge.models.payloads import CampaignBatchInput, CampaignBatchResult, CampaignPlan
from nudge.models.tables import Campaign, CampaignRow, Channel, Contact, Delivery, Tenant
from nudge.models.template_context import message_context
from nudge.store import campaigns
from nudge.store.deliveries import find_by_key
from nudge.store.directory import find_channel
from nudge.templating import TemplateProblem

log = logging.getLogger(__name__)

# Sends in flight at once within a batch (all_at_once and gradual modes).
CONCURRENCY = 10
# How long a provider that asked to slow down is left alone, unless it says how long.
BACK_OFF_SECONDS = 2.0
CAMPAIGN_OWNER = "campaign:"


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    last_line: int = 0
    stopped_by: str | None = None
    back_off: float | None = None
    done_lines: set[int] = field(default_factory=set)


class CampaignActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], deliverer: Deliverer) -> None:
        self._sessions = sessions
        self._deliverer = deliverer

    @activity.defn(name="load_campaign_plan")
    async def load_plan(self, campaign_id: str) -> CampaignPlan:
        """The stored start, mode and status (edited while scheduled, paused, …)."""
        async with read_only(self._sessions)() as session:
            campaign = await session.get_one(Campaign, campaign_id)
            return CampaignPlan(
                status=campaign.status,
                start_at=campaign.start_at.isoformat() if campaign.start_at else None,
                mode=campaign.definition.get("mode", {"type": "all_at_once"}),
                total=campaign.total,
            )

    @activity.defn(name="move_campaign")
    async def move(self, campaign_id: str, to: str) -> str:
        """Move the stored status (running, completed, cancelled); the status it has after."""
        async with transaction(self._sessions) as session:
            await campaigns.move(session, campaign_id, to)
            if to == "cancelled":
                await campaigns.skip_queued(session, campaign_id)
            status = await campaigns.status_of(session, campaign_id)
        return status or "gone"

    @activity.defn(name="send_campaign_batch")
    async def send_batch(self, request: CampaignBatchInput) -> CampaignBatchResult:
        """Send the next queued rows; stops early for a pause, a cancel or a provider that
        asks to slow down (the row stays queued and goes in a later batch)."""
        async with read_only(self._sessions)() as session:
            campaign = await session.get_one(Campaign, request.campaign_id)
            tenant = await session.get_one(Tenant, campaign.tenant_id)
            rows = await campaigns.queued_rows(
                session, campaign.id, request.after_line, request.limit
            )
            contacts = await campaigns.contacts_of(session, [row.contact_id for row in rows])
            channels = {
                slug: await find_channel(session, tenant.id, slug)
                for slug in {row.channel for row in rows}
            }
        template = parse_message(campaign.definition["message"])
        tally = _Tally(last_line=request.after_line)
        send = _RowSender(self, campaign, tenant, template, channels, contacts, tally)
        if request.per_second:
            await _paced(rows, send, request.per_second, tally)
        else:
            await _concurrent(rows, send, tally)
        tally.last_line = _contiguous_end(request.after_line, rows, tally.done_lines)
        return CampaignBatchResult(
            sent=tally.sent,
            failed=tally.failed,
            unknown=tally.unknown,
            last_line=tally.last_line,
            done=len(rows) < request.limit and tally.stopped_by is None and tally.back_off is None,
            stopped_by=tally.stopped_by,
            back_off_seconds=tally.back_off,
        )

    async def _still_running(self, campaign_id: str) -> str | None:
        """None while the campaign may send; else the status that stops it."""
        async with read_only(self._sessions)() as session:
            status = await campaigns.status_of(session, campaign_id)
        return None if status == "running" else (status or "gone")


class _RowSender:
    """Sends one row: checks the stored status, renders, delivers, records the row."""

    def __init__(
        self,
        owner: CampaignActivities,
        campaign: Campaign,
        tenant: Tenant,
        template: AnyMessage,
        channels: dict[str, Channel | None],
        contacts: dict[str, Contact],
        tally: _Tally,
    ) -> None:
        self._owner = owner
        self._campaign = campaign
        self._tenant = tenant
        self._template = template
        self._channels = channels
        self._contacts = contacts
        self._tally = tally

    async def __call__(self, row: CampaignRow) -> bool:
        """False when the batch must stop before this row (nothing was sent for it)."""
        tally = self._tally
        if tally.stopped_by is not None or tally.back_off is not None:
            return False
        stopped = await self._owner._still_running(self._campaign.id)
        if stopped is not None:
            tally.stopped_by = stopped
            return False
        activity.heartbeat(row.line)
        status, error, delivery_id = await self._send(row)
        if status == "queued":  # the provider asked to slow down: the row goes later
            return False
        async with transaction(self._owner._sessions) as session:
            await campaigns.mark_row(
                session, self._campaign.id, row.line, status, delivery_id=delivery_id, error=error
            )
        if status == "sent":
            tally.sent += 1
        elif status == "unknown":
            tally.unknown += 1
        else:
            tally.failed += 1
        tally.done_lines.add(row.line)
        return True

    async def _send(self, row: CampaignRow) -> tuple[str, str | None, str | None]:
        """(row status, error, delivery id); status `queued` means "not now"."""
        channel = self._channels.get(row.channel)
        contact = self._contacts.get(row.contact_id)
        if channel is None or contact is None:
            return "failed", f"channel {row.channel!r} or the contact no longer exists", None
        context = message_context(
            contact_context(contact),
            row=row.values,
            campaign={"id": self._campaign.id, "name": self._campaign.name},
        )
        try:
            message = render_message(self._template, context)
        except TemplateProblem as exc:
            return "failed", f"template: {exc}", None
        outbound = Outbound(
            tenant=self._tenant.slug,
            channel=channel.slug,
            idempotency_key=f"campaign:{self._campaign.id}:{row.line}",
            recipient=recipient_of(contact),
            message=message,
            source={"type": "campaign", "campaign_id": self._campaign.id, "line": row.line},
            belongs_to=f"{CAMPAIGN_OWNER}{self._campaign.id}",
        )
        try:
            sent = await self._owner._deliverer.deliver(
                tenant_id=self._tenant.id, contact=contact, channel=channel, outbound=outbound
            )
        except ApplicationError as exc:
            if exc.non_retryable:
                return "failed", str(exc.message), await self._delivery_id(outbound)
            self._tally.back_off = _back_off(exc)
            log.info("campaign %s: provider asks to slow down: %s", self._campaign.id, exc)
            return "queued", None, None
        return ("unknown" if sent.unknown else "sent"), None, sent.delivery_id

    async def _delivery_id(self, outbound: Outbound) -> str | None:
        async with read_only(self._owner._sessions)() as session:
            delivery: Delivery | None = await find_by_key(session, outbound.idempotency_key)
        return delivery.id if delivery else None


def _back_off(exc: ApplicationError) -> float:
    delay = exc.next_retry_delay
    return max(delay.total_seconds(), 1.0) if delay else BACK_OFF_SECONDS


async def _concurrent(
    rows: list[CampaignRow], send: Callable[[CampaignRow], Awaitable[bool]], tally: _Tally
) -> None:
    """Rows in line order, a few in flight at once; stops taking new ones on a stop."""
    queue = list(reversed(rows))

    async def worker() -> None:
        while queue and tally.stopped_by is None and tally.back_off is None:
            await send(queue.pop())

    await asyncio.gather(*(worker() for _ in range(min(CONCURRENCY, len(rows)) or 1)))


async def _paced(
    rows: list[CampaignRow],
    send: Callable[[CampaignRow], Awaitable[bool]],
    per_second: float,
    tally: _Tally,
) -> None:
    """One row every 1/per_second seconds, on a fixed grid so slow sends do not drift."""
    start = time.monotonic()
    for index, row in enumerate(rows):
        due = start + index / per_second
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if not await send(row):
            return
        if tally.stopped_by is not None:
            return


def _contiguous_end(after_line: int, rows: list[CampaignRow], done: set[int]) -> int:
    """The last line up to which every row of the batch is done: the next batch starts
    after it (rows not done stay queued and are picked again)."""
    end = after_line
    for row in rows:
        if row.line not in done:
            break
        end = row.line
    return end
