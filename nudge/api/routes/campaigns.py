"""Campaigns: one message to every row of a CSV, now or later, at a pace the tenant sets.

`POST /v1/campaigns` checks the whole CSV before anything is stored; the campaign, its
rows and the start of its run are then written in one transaction (the outbox), so an API
that dies after the commit still has its campaign started by the workers' relay.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import IO, Annotated, Any

from fastapi import APIRouter, File, Form, Path, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.api.body_limit import MAX_UPLOAD_BYTES
from nudge.api.deps import AdminDep, PageDep, SessionDep, SettingsDep
from nudge.api.relay import RelayDep
from nudge.errors import Conflict, InvalidInput
from nudge.models.campaign_csv import CheckedCsv, check_csv
from nudge.models.campaigns import (
    CAMPAIGN_NAMES,
    MAX_PROBLEMS,
    CampaignCreate,
    CampaignEdit,
    CampaignProgress,
    CampaignPublic,
)
from nudge.models.pages import Page
from nudge.models.tables import Campaign, Channel, utcnow
from nudge.models.template_context import unknown_names
from nudge.naming import campaign_workflow_id
from nudge.runs.campaigns import stage_control, stage_start
from nudge.store import campaigns
from nudge.store.campaigns import NewRow
from nudge.store.tenants import Principal

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])

CampaignId = Annotated[str, Path(max_length=64)]
CHUNK = 64 * 1024
_CAMPAIGN_DOC = (
    'The campaign as JSON, e.g. {"name": "Renewals", "separator": ";", "recipient_column":'
    ' "phone", "channel": "wa-main", "message": {"kind": "text", "text": "Hi {{ row.name }}"},'
    ' "start": "now", "mode": {"type": "rate", "per_second": 5}}'
)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_campaign(
    principal: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
    relay: RelayDep,
    file: Annotated[
        UploadFile,
        File(
            description="The CSV: UTF-8, a header line first; at most 100 MB.",
            json_schema_extra={"maxLength": MAX_UPLOAD_BYTES},
        ),
    ],
    campaign: Annotated[str, Form(max_length=100_000, description=_CAMPAIGN_DOC)],
) -> CampaignPublic:
    """Create a campaign from a CSV. The whole file is checked first: problems come back as
    a 422 listing line, column and reason, and nothing is stored."""
    spec = _spec(campaign)
    senders = await _channel_slugs(session, principal.tenant_id)
    if spec.channel is not None and spec.channel not in senders:
        raise InvalidInput.at(("body", "campaign", "channel"), f"no channel {spec.channel!r}")
    checked = await run_in_threadpool(check_csv, _chunks(file.file), spec, senders)
    if not checked.ok:
        raise _csv_problems(checked)
    contact_ids = await _contacts(session, principal.tenant_id, spec, checked)
    row = await campaigns.add_campaign(
        session,
        tenant_id=principal.tenant_id,
        name=spec.name,
        definition=spec.model_dump(mode="json", exclude_none=True),
        start_at=spec.start_utc(),
        total=len(checked.rows),
        duplicates=len(checked.duplicates),
    )
    await campaigns.add_rows(
        session,
        row.id,
        [
            NewRow(
                line=r.line,
                contact_id=contact_ids[r.recipient],
                channel=r.sender or spec.channel or "",
                values=r.values,
            )
            for r in checked.rows
        ],
    )
    entry = stage_start(session, settings, principal.tenant_slug, row)
    await session.commit()
    await relay.relay_written([entry])
    return await _public(session, principal, row)


@router.get("")
async def list_campaigns(
    principal: AdminDep, session: SessionDep, page: PageDep
) -> Page[CampaignPublic]:
    """The tenant's campaigns, newest first, with their progress."""
    rows, next_cursor = await campaigns.campaigns_page(session, principal.tenant_id, page)
    items = [await _public(session, principal, row) for row in rows]
    return Page[CampaignPublic](items=items, next_cursor=next_cursor)


@router.get("/{campaign_id}")
async def read_campaign(
    campaign_id: CampaignId, principal: AdminDep, session: SessionDep
) -> CampaignPublic:
    """One campaign: status and progress (queued, sent, failed, rate now, expected end)."""
    row = await campaigns.get_campaign(session, principal.tenant_id, campaign_id)
    return await _public(session, principal, row)


@router.patch("/{campaign_id}")
async def edit_campaign(
    campaign_id: CampaignId,
    body: CampaignEdit,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
) -> CampaignPublic:
    """Change the name, start or mode of a campaign that has not started."""
    row = await campaigns.get_campaign(session, principal.tenant_id, campaign_id)
    if row.status != "scheduled":
        raise Conflict(f"campaign {campaign_id} is {row.status}: only a scheduled one is edited")
    definition = dict(row.definition)
    if body.name is not None:
        row.name = definition["name"] = body.name
    if body.mode is not None:
        definition["mode"] = body.mode.model_dump(mode="json")
    if body.start is not None:
        definition["start"] = (
            body.start if body.start == "now" else body.start.model_dump(mode="json")
        )
        row.start_at = None if body.start == "now" else body.start.utc()
    row.definition = definition
    row.updated_at = utcnow()
    entry = stage_control(session, principal.tenant_slug, row, "edited", _who(principal))
    await session.commit()
    await relay.relay_written([entry])
    return await _public(session, principal, row)


@router.post("/{campaign_id}/pause")
async def pause_campaign(
    campaign_id: CampaignId, principal: AdminDep, session: SessionDep, relay: RelayDep
) -> CampaignPublic:
    """Pause: once this answers, no send of the campaign starts until it is resumed."""
    return await _control(session, relay, principal, campaign_id, "paused", "pause")


@router.post("/{campaign_id}/resume")
async def resume_campaign(
    campaign_id: CampaignId, principal: AdminDep, session: SessionDep, relay: RelayDep
) -> CampaignPublic:
    """Resume a paused campaign where it stopped."""
    return await _control(session, relay, principal, campaign_id, "resumed", "resume")


@router.post("/{campaign_id}/cancel")
async def cancel_campaign(
    campaign_id: CampaignId, principal: AdminDep, session: SessionDep, relay: RelayDep
) -> CampaignPublic:
    """Cancel: rows not sent yet are never sent (they show as `skipped`)."""
    return await _control(session, relay, principal, campaign_id, "cancelled", "cancel")


async def _control(
    session: AsyncSession,
    relay: Any,
    principal: Principal,
    campaign_id: str,
    to: str,
    signal: str,
) -> CampaignPublic:
    row = await campaigns.get_campaign(session, principal.tenant_id, campaign_id)
    # The database first: every send reads it, so the answer below is a promise kept.
    if not await campaigns.move(session, row.id, to):
        await session.rollback()
        current = await campaigns.get_campaign(session, principal.tenant_id, campaign_id)
        raise Conflict(f"campaign {campaign_id} is {current.status}: cannot {signal} it")
    if to == "cancelled":
        await campaigns.skip_queued(session, row.id)
    entry = stage_control(session, principal.tenant_slug, row, signal, _who(principal))
    await session.commit()
    await relay.relay_written([entry])
    await session.refresh(row)
    return await _public(session, principal, row)


def _who(principal: Principal) -> str:
    return f"{principal.role} API key"


def _spec(raw: str) -> CampaignCreate:
    """The `campaign` part, with errors located under `body.campaign`."""
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput.at(("body", "campaign"), f"not JSON: {exc.msg}") from None
    try:
        spec = CampaignCreate.model_validate(parsed)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", "campaign", *error["loc"])}
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise RequestValidationError(errors, body={"campaign": parsed}) from None
    problems = unknown_names(spec.message, CAMPAIGN_NAMES, ("body", "campaign", "message"))
    if problems:
        raise InvalidInput([(loc, message) for loc, _kind, message, _name in problems])
    return spec


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _csv_problems(checked: CheckedCsv) -> InvalidInput:
    shown = checked.problems[:MAX_PROBLEMS]
    return InvalidInput(
        [(("body", "file", p.line, *((p.column,) if p.column else ())), p.reason) for p in shown],
        extra={
            "problems": [p.model_dump() for p in shown],
            "total": checked.total_problems,
        },
    )


async def _channel_slugs(session: AsyncSession, tenant_id: str) -> set[str]:
    rows = await session.execute(select(Channel.slug).where(Channel.tenant_id == tenant_id))
    return set(rows.scalars())


async def _contacts(
    session: AsyncSession, tenant_id: str, spec: CampaignCreate, checked: CheckedCsv
) -> dict[str, str]:
    """The contact of every row's recipient; unknown phones become contacts, unknown
    external ids are a 422 naming their lines."""
    recipients = [row.recipient for row in checked.rows]
    if spec.recipient_kind == "phone":
        return await campaigns.contacts_for_phones(session, tenant_id, recipients)
    found = await campaigns.contacts_by_external_id(session, tenant_id, recipients)
    missing = [row for row in checked.rows if row.recipient not in found]
    if missing:
        problems = [
            (("body", "file", row.line, spec.recipient_column), f"no contact {row.recipient!r}")
            for row in missing[:MAX_PROBLEMS]
        ]
        raise InvalidInput(
            problems,
            extra={
                "problems": [
                    {"line": loc[2], "column": spec.recipient_column, "reason": message}
                    for loc, message in problems
                ],
                "total": len(missing),
            },
        )
    return found


async def _public(session: AsyncSession, principal: Principal, row: Campaign) -> CampaignPublic:
    counts = await campaigns.row_counts(session, row.id)
    definition = row.definition
    rate = counts.sent_last_minute / 60 if counts.sent_last_minute else None
    return CampaignPublic(
        id=row.id,
        name=row.name,
        status=row.status,
        channel=definition.get("channel"),
        sender_column=definition.get("sender_column"),
        mode=definition.get("mode", {"type": "all_at_once"}),
        start_at=row.start_at,
        progress=CampaignProgress(
            total=row.total,
            queued=counts.queued,
            sent=counts.sent,
            failed=counts.failed,
            unknown=counts.unknown,
            skipped=counts.skipped,
            duplicates=row.duplicates,
            rate_per_second=round(rate, 3) if rate else None,
            expected_end=_expected_end(row, counts.queued, rate),
        ),
        workflow_id=campaign_workflow_id(principal.tenant_slug, row.id),
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def _expected_end(row: Campaign, queued: int, rate: float | None) -> Any:
    """When the last queued row should go, at the mode's pace (or the pace measured)."""
    if row.status not in ("scheduled", "running") or queued == 0:
        return None
    mode = row.definition.get("mode", {"type": "all_at_once"})
    begin = max(row.start_at or utcnow(), utcnow())
    if mode["type"] == "rate":
        return begin + timedelta(seconds=queued / float(mode["per_second"]))
    if mode["type"] == "gradual":
        batches = -(-queued // int(mode["batch_size"])) - 1
        return begin + timedelta(minutes=batches * int(mode["every_minutes"]))
    if rate:
        return begin + timedelta(seconds=queued / rate)
    return None
