"""Follow-ups: definitions, their lifecycle, records, and runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.api.deps import AdminDep, PageDep, SessionDep, SettingsDep, TemporalDep
from nudge.api.rate_limits import RATE_LIMITED, limit_poll
from nudge.api.relay import RelayDep
from nudge.errors import Conflict
from nudge.models.followup_bundle import (
    FollowUpImportReport,
    LeftInactive,
    read_bundle,
    requirements,
    write_bundle,
)
from nudge.models.followups import (
    FollowUpCopy,
    FollowUpDefinition,
    FollowUpPublic,
    FollowUpRecordPublic,
    RecordStop,
)
from nudge.models.pages import Page
from nudge.models.payloads import Ending
from nudge.models.signals import POLL_NOW, STOP_RECORD, PollNow
from nudge.runs.followups import signal_poller, stage_poll_now, stage_record_signal, stage_status
from nudge.store.delivery_states import states_belonging_to
from nudge.store.followup_definitions import (
    create_followup,
    followups_page,
    import_followup,
    list_followups,
    missing_references,
    public,
    review_import,
    save_new_version,
    set_status,
)
from nudge.store.followups import definition_at, get_followup
from nudge.store.records import end_record, get_record, records_page
from nudge.store.tenants import Principal

router = APIRouter(prefix="/v1/followups", tags=["follow-ups"])

FollowUpId = Annotated[str, Path(max_length=64)]


def _who(principal: Principal) -> str:
    return f"{principal.role} API key"


@router.post("", status_code=status.HTTP_201_CREATED)
async def create(
    body: FollowUpDefinition,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> FollowUpPublic:
    """Create a follow-up; when `active`, its poller starts at once."""
    followup = await create_followup(session, principal.tenant_id, body)
    answer = await public(session, followup)
    entries = await stage_status(
        session, settings, principal.tenant_slug, followup, "inactive", _who(principal)
    )
    await session.commit()
    await relay.relay_written(entries)
    return answer


@router.get("")
async def read_all(principal: AdminDep, session: SessionDep, page: PageDep) -> Page[FollowUpPublic]:
    """The tenant's follow-ups, oldest first."""
    rows, next_cursor = await followups_page(session, principal.tenant_id, page)
    return Page[FollowUpPublic](
        items=[await public(session, f) for f in rows], next_cursor=next_cursor
    )


@router.get(
    "/export",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "The zip file."}},
)
async def export(
    principal: AdminDep,
    session: SessionDep,
    ids: Annotated[str | None, Query(description="Comma-separated ids; all when omitted.")] = None,
) -> Response:
    """Export follow-ups (all, or those named) as a zip another tenant can import."""
    if ids:
        wanted = [i for i in ids.split(",") if i]
        followups = [await get_followup(session, principal.tenant_id, i) for i in wanted]
    else:
        followups = await list_followups(session, principal.tenant_id)
    definitions = [await definition_at(session, f.id, f.version) for f in followups]
    definitions = [
        d.model_copy(update={"status": f.status})
        for d, f in zip(definitions, followups, strict=True)
    ]
    return Response(
        content=write_bundle(principal.tenant_slug, definitions),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{principal.tenant_slug}-followups.zip"'
        },
    )


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
)
async def import_(
    request: Request,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> FollowUpImportReport:
    """Import a zip made by export (`--data-binary @file.zip`); reports what is missing."""
    definitions = read_bundle(await request.body())
    missing = await missing_references(session, principal.tenant_id, requirements(definitions))
    review = await review_import(session, principal.tenant_id, definitions, missing)
    created, left_inactive = [], []
    for definition, reasons in zip(definitions, review.reasons, strict=True):
        followup = await import_followup(
            session, principal.tenant_id, definition, runnable=not reasons
        )
        created.append(followup)
        if reasons and definition.status == "active":
            left_inactive.append(LeftInactive(id=followup.id, name=followup.name, reasons=reasons))
    answers = [await public(session, f) for f in created]
    entries = [
        entry
        for followup in created
        for entry in await stage_status(
            session, settings, principal.tenant_slug, followup, "inactive", _who(principal)
        )
    ]
    await session.commit()
    await relay.relay_written(entries)
    return FollowUpImportReport(
        created=answers,
        missing=missing,
        secret_hosts=review.secret_hosts,
        left_inactive=left_inactive,
    )


@router.get("/{followup_id}")
async def read(followup_id: FollowUpId, principal: AdminDep, session: SessionDep) -> FollowUpPublic:
    """One follow-up, at its newest version."""
    return await public(session, await get_followup(session, principal.tenant_id, followup_id))


@router.put("/{followup_id}")
async def update(
    followup_id: FollowUpId,
    body: FollowUpDefinition,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> FollowUpPublic:
    """Save a new version. Running record follow-ups finish on theirs; new records take this one."""
    followup = await get_followup(session, principal.tenant_id, followup_id)
    was = followup.status
    await save_new_version(session, followup, body)
    answer = await public(session, followup)
    entries = await stage_status(
        session, settings, principal.tenant_slug, followup, was, _who(principal)
    )
    if was == "active" and followup.status == "active":
        entries.append(stage_poll_now(session, principal.tenant_slug, followup))
    await session.commit()
    await relay.relay_written(entries)
    return answer


@router.delete("/{followup_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(
    followup_id: FollowUpId,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> None:
    """Delete a follow-up: its poller and every record run stop."""
    followup = await get_followup(session, principal.tenant_id, followup_id)
    was = set_status(followup, "deleted")
    entries = await stage_status(
        session, settings, principal.tenant_slug, followup, was, _who(principal)
    )
    await session.commit()
    await relay.relay_written(entries)


async def _set_status(
    followup_id: str,
    new: str,
    principal: Principal,
    session: AsyncSession,
    relay: RelayDep,
    settings: SettingsDep,
) -> FollowUpPublic:
    followup = await get_followup(session, principal.tenant_id, followup_id)
    was = set_status(followup, new)
    answer = await public(session, followup)
    entries = await stage_status(
        session, settings, principal.tenant_slug, followup, was, _who(principal)
    )
    await session.commit()
    await relay.relay_written(entries)
    return answer


@router.post("/{followup_id}/activate")
async def activate(
    followup_id: FollowUpId,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> FollowUpPublic:
    """Start polling and reminding."""
    return await _set_status(followup_id, "active", principal, session, relay, settings)


@router.post("/{followup_id}/deactivate")
async def deactivate(
    followup_id: FollowUpId,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> FollowUpPublic:
    """Stop the poller and every record run."""
    return await _set_status(followup_id, "inactive", principal, session, relay, settings)


@router.post(
    "/{followup_id}/poll",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(limit_poll)],
    responses=RATE_LIMITED,
)
async def poll_now(
    followup_id: FollowUpId, principal: AdminDep, session: SessionDep, temporal: TemporalDep
) -> dict[str, str]:
    """Poll at once, without waiting for the timer."""
    followup = await get_followup(session, principal.tenant_id, followup_id)
    if followup.status != "active":
        raise Conflict("the follow-up is inactive; activate it first")
    await (
        session.commit()
    )  # read only: hold no transaction (on SQLite a lock) while Temporal answers
    if not await signal_poller(temporal, principal.tenant_slug, followup.id, POLL_NOW, PollNow()):
        raise Conflict("the follow-up's poller is not running; deactivate and activate it")
    return {"status": "poll requested"}


@router.post("/{followup_id}/copy", status_code=status.HTTP_201_CREATED)
async def copy(
    followup_id: FollowUpId,
    body: FollowUpCopy,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> FollowUpPublic:
    """A new follow-up from this one, with the same status."""
    source = await get_followup(session, principal.tenant_id, followup_id)
    definition = await definition_at(session, source.id, source.version)
    definition = definition.model_copy(update={"name": body.name, "status": source.status})
    followup = await create_followup(session, principal.tenant_id, definition)
    answer = await public(session, followup)
    entries = await stage_status(
        session, settings, principal.tenant_slug, followup, "inactive", _who(principal)
    )
    await session.commit()
    await relay.relay_written(entries)
    return answer


@router.get("/{followup_id}/records")
async def records(
    followup_id: FollowUpId, principal: AdminDep, session: SessionDep, page: PageDep
) -> Page[FollowUpRecordPublic]:
    """The records this follow-up has found (first found first), with their state and data."""
    followup = await get_followup(session, principal.tenant_id, followup_id)
    rows, next_cursor = await records_page(session, principal.tenant_id, followup.id, page)
    sends = await states_belonging_to(
        session, principal.tenant_id, [f"record:{r.id}" for r in rows]
    )
    items = [
        FollowUpRecordPublic.model_validate(r, from_attributes=True).model_copy(
            update={"deliveries": sends.get(f"record:{r.id}", [])}
        )
        for r in rows
    ]
    return Page[FollowUpRecordPublic](items=items, next_cursor=next_cursor)


@router.post(
    "/{followup_id}/records/{reconciliation_id}/stop", status_code=status.HTTP_202_ACCEPTED
)
async def stop_record(
    followup_id: FollowUpId,
    reconciliation_id: Annotated[str, Path(max_length=200)],
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    body: Annotated[RecordStop, Body()] = RecordStop(),
) -> FollowUpRecordPublic:
    """Stop reminding about one record. No message of its run leaves after this answer."""
    followup = await get_followup(session, principal.tenant_id, followup_id)
    record = await get_record(session, principal.tenant_id, followup.id, reconciliation_id)
    if record.state != "following":
        raise Conflict(f"record {reconciliation_id!r} is already {record.state}")
    stop = Ending(by=_who(principal), reason=body.reason)
    # Stopped in the database before the answer: an attempt in flight checks it before each send.
    end_record(record, "stopped", stop)
    entry = stage_record_signal(session, principal.tenant_slug, record, STOP_RECORD, stop)
    answer = FollowUpRecordPublic.model_validate(record, from_attributes=True)
    await session.commit()
    await relay.relay_written([entry])
    return answer
