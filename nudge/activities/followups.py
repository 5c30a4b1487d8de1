"""Activities of follow-ups: poll and reconcile, fan out record runs, attempts, actions."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from nudge.activities.channels.base import Outbound
from nudge.activities.delivery import Deliverer
from nudge.activities.extraction import Extraction, ExtractionError, extract_records
from nudge.activities.fan_out import FAN_OUT_CONCURRENCY, signal_runs
from nudge.activities.integrations import (
    AttributeChanges,
    IntegrationError,
    apply_set_attributes,
    call_integration,
)
from nudge.activities.notifications import contact_context, recipient_of
from nudge.activities.recipients import resolve_recipients
from nudge.errors import NotFound
from nudge.models.db import transaction
from nudge.models.followups import FollowUpDefinition
from nudge.models.integrations import Action, IntegrationAction, SetAttribute
from nudge.models.messages import CardMessage, render_message
from nudge.models.payloads import (
    ActionsInput,
    AttemptInput,
    AttemptResult,
    Ending,
    EndRecordInput,
    PollInput,
    PollResult,
    RecordInput,
    RecordPlan,
    StopRecordsInput,
)
from nudge.models.tables import (
    Channel,
    Contact,
    Delivery,
    FollowUp,
    FollowUpRecipient,
    FollowUpRecord,
    Tenant,
    utcnow,
)
from nudge.naming import Kind, record_workflow_id, search_attributes
from nudge.security import ActionTokens, SecretBox
from nudge.store.directory import find_channel, secret_values
from nudge.store.followups import (
    definition_at,
    get_followup,
    global_attributes,
    reconcile_records,
    set_global_attributes,
)
from nudge.templating import TemplateProblem

log = logging.getLogger(__name__)


def _integration_failure(exc: IntegrationError) -> ApplicationError:
    return ApplicationError(str(exc), type="IntegrationFailed", non_retryable=not exc.retryable)


def _set_attributes(items: list[SetAttribute], context: dict[str, Any]) -> AttributeChanges:
    """Set Attributes; a template that cannot render will not render on a retry either."""
    try:
        return apply_set_attributes(items, context)
    except TemplateProblem as exc:
        raise ApplicationError(str(exc), type="TemplateError", non_retryable=True) from exc


class FollowUpActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        http: httpx.AsyncClient,
        deliverer: Deliverer,
        tokens: ActionTokens,
        public_url: str,
        task_queue: str,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._http = http
        self._deliverer = deliverer
        self._tokens = tokens
        self._public_url = public_url.rstrip("/")
        self._task_queue = task_queue

    # Polling -----------------------------------------------------------------------------

    @activity.defn(name="poll_followup")
    async def poll_followup(self, request: PollInput) -> PollResult:
        """Run the integrations, set attributes, reconcile the records, start new runs."""
        async with self._sessions() as session:
            try:
                followup = await get_followup(session, request.tenant_id, request.followup_id)
            except NotFound as exc:
                # Deleted: its poller is being stopped; polling again will not bring it back.
                raise ApplicationError(str(exc), type="FollowUpGone", non_retryable=True) from exc
            definition = await definition_at(session, followup.id, followup.version)
            secrets = await secret_values(session, request.tenant_id, self._box)
            globals_ = await global_attributes(session, request.tenant_id)
        extraction_def = definition.data_extraction
        result = PollResult(name=definition.name, polling_minutes=extraction_def.polling_minutes)
        if followup.status != "active":
            return result

        try:
            changes, extraction = await self._extract(definition, globals_, secrets)
        except ApplicationError as exc:
            await self._report_poll(followup.id, {"error": exc.message})
            raise
        for skipped in extraction.skipped:
            log.warning(
                "follow-up %s: record %s skipped: %s", followup.id, skipped.index, skipped.reason
            )

        async with transaction(self._sessions) as session:
            followup = await get_followup(session, request.tenant_id, request.followup_id)
            await set_global_attributes(session, request.tenant_id, changes.global_)
            reconciliation = await reconcile_records(
                session,
                followup,
                extraction.records,
                resolve_missing=definition.exit.on_record_resolved,
            )
            to_start = [
                (r.id, r.reconciliation_id, r.version, r.generation)
                for r in reconciliation.to_start
            ]
            resolved = [r.reconciliation_id for r in reconciliation.resolved]

        client = activity.client()
        await self._start_records(client, request, definition.name, to_start)
        stop = Ending(by="poll", reason="the record is no longer returned by the integrations")
        await signal_runs(
            client,
            [record_workflow_id(request.tenant, request.followup_id, rid) for rid in resolved],
            "resolve",
            stop,
        )
        result = result.model_copy(
            update={
                "found": len(extraction.records),
                "new": len(to_start),
                "resolved": len(resolved),
                "skipped": len(extraction.skipped),
            }
        )
        await self._report_poll(
            followup.id,
            {
                "found": result.found,
                "new": result.new,
                "resolved": result.resolved,
                "skipped": [{"index": s.index, "reason": s.reason} for s in extraction.skipped],
            },
        )
        return result

    async def _extract(
        self, definition: FollowUpDefinition, globals_: dict[str, Any], secrets: dict[str, str]
    ) -> tuple[AttributeChanges, Extraction]:
        """Call the integrations in order, set attributes, and take the records out."""
        extraction_def = definition.data_extraction
        responses: dict[str, Any] = {}
        for integration in extraction_def.integrations:
            context = {**responses, "global": globals_}
            try:
                responses[integration.name] = await call_integration(
                    self._http, integration, context, secrets=secrets
                )
            except IntegrationError as exc:
                raise _integration_failure(exc) from exc
        changes = _set_attributes(
            extraction_def.set_attributes, {**responses, "global": globals_, "local": {}}
        )
        try:
            extraction = extract_records(
                extraction_def.looping_element, extraction_def.reconciliation_id, responses
            )
        except ExtractionError as exc:
            raise ApplicationError(str(exc), type="ExtractionFailed", non_retryable=True) from exc
        return changes, extraction

    async def _report_poll(self, followup_id: str, report: dict[str, Any]) -> None:
        attempt = activity.info().attempt
        async with transaction(self._sessions) as session:
            followup = await session.get_one(FollowUp, followup_id)
            followup.last_poll = {"at": utcnow().isoformat(), "attempt": attempt, **report}

    async def _start_records(
        self,
        client: Client,
        request: PollInput,
        name: str,
        records: list[tuple[str, str, int, int]],
    ) -> None:
        """Start each new record's run; a retried poll finds them running and starts none twice."""
        from nudge.workflows.followup_record import FollowUpRecord as RecordWorkflow

        limit = asyncio.Semaphore(FAN_OUT_CONCURRENCY)
        started: list[str] = []

        async def start(record_id: str, rid: str, version: int, generation: int) -> None:
            async with limit:
                await client.start_workflow(
                    RecordWorkflow.run,
                    RecordInput(
                        tenant_id=request.tenant_id,
                        tenant=request.tenant,
                        followup_id=request.followup_id,
                        record_id=record_id,
                        reconciliation_id=rid,
                        version=version,
                        generation=generation,
                        time_scale=request.time_scale,
                    ),
                    id=record_workflow_id(request.tenant, request.followup_id, rid),
                    task_queue=self._task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    search_attributes=search_attributes(
                        request.tenant,
                        Kind.FOLLOWUP_RECORD,
                        followup=request.followup_id,
                        record=rid,
                    ),
                    static_summary=f"{name} · {rid}",
                )
                started.append(record_id)
                if len(started) % 200 == 0:
                    activity.heartbeat(len(started))

        try:
            await asyncio.gather(*(start(*r) for r in records))
        finally:
            await self._mark_started(started)

    async def _mark_started(self, record_ids: list[str]) -> None:
        if not record_ids:
            return
        async with transaction(self._sessions) as session:
            for chunk in range(0, len(record_ids), 500):
                ids = record_ids[chunk : chunk + 500]
                rows = await session.execute(
                    select(FollowUpRecord).where(FollowUpRecord.id.in_(ids))
                )
                for record in rows.scalars():
                    record.workflow_started = True

    @activity.defn(name="stop_followup_records")
    async def stop_followup_records(self, request: StopRecordsInput) -> int:
        """Stop every record run of a follow-up that is being deactivated or deleted."""
        async with transaction(self._sessions) as session:
            rows = await session.execute(
                select(FollowUpRecord).where(
                    FollowUpRecord.followup_id == request.followup_id,
                    FollowUpRecord.tenant_id == request.tenant_id,
                    FollowUpRecord.state == "following",
                )
            )
            records = list(rows.scalars())
            now = utcnow()
            for record in records:
                # Stopped in the database first: an attempt in flight checks it before each send.
                record.state, record.ended_at, record.next_attempt_at = "stopped", now, None
                record.ended_by, record.end_reason = request.stop.by, request.stop.reason
            rids = [r.reconciliation_id for r in records]
        ids = [record_workflow_id(request.tenant, request.followup_id, rid) for rid in rids]
        await signal_runs(activity.client(), ids, "stop", request.stop)
        return len(ids)

    # One record ---------------------------------------------------------------------------

    @activity.defn(name="load_record_plan")
    async def load_record_plan(self, request: RecordInput) -> RecordPlan:
        """The schedule of the version this record run is pinned to."""
        async with self._sessions() as session:
            definition = await definition_at(session, request.followup_id, request.version)
        return RecordPlan(
            name=definition.name,
            attempts=definition.schedule.attempts,
            notify_minutes=definition.schedule.notify_minutes,
            on_reply=definition.exit.on_reply,
        )

    @activity.defn(name="run_attempt")
    async def run_attempt(self, request: AttemptInput) -> AttemptResult:
        """Resolve recipients, render and send to each (effectively once), then after-each."""
        async with self._sessions() as session:
            record = await session.get_one(FollowUpRecord, request.record_id)
            if record.state != "following":
                return AttemptResult(sent=0, stopped=True)
            followup = await session.get_one(FollowUp, record.followup_id)
            tenant = await session.get_one(Tenant, record.tenant_id)
            definition = await definition_at(session, record.followup_id, record.version)
            secrets = await secret_values(session, tenant.id, self._box)
            globals_ = await global_attributes(session, tenant.id)
        context = self._record_context(
            record, definition, request.attempt, request.attempts, globals_
        )
        source: Any = record.data
        if definition.recipients.integration is not None:
            try:
                source = await call_integration(
                    self._http, definition.recipients.integration, context, secrets=secrets
                )
            except IntegrationError as exc:
                raise _integration_failure(exc) from exc
            changes = _set_attributes(
                definition.recipients.set_attributes, {**context, "recipient_data": source}
            )
            context["local"] = {**context["local"], **changes.local}
        async with self._sessions() as session:
            recipients = await resolve_recipients(session, tenant.id, definition.recipients, source)
            channels = await self._channels(
                session, tenant.id, definition.channel, recipients.contacts
            )

        sent, failures = 0, dict[str, str]()
        for contact in recipients.contacts:
            if await self._stopped(record.id):
                return AttemptResult(sent=sent, unmatched=recipients.unmatched, stopped=True)
            channel = channels.get(contact.id)
            if channel is None:
                failures[contact.external_id] = "no channel: the contact has not written on any"
                continue
            try:
                await self._send(
                    tenant, followup, record, definition, request, contact, channel, context
                )
                sent += 1
            except ApplicationError as exc:
                if not exc.non_retryable:
                    raise
                failures[contact.external_id] = str(exc)
        await self._after_attempt(record.id, request, recipients.unmatched, failures)
        await self._run_stage(
            record.id,
            f"after_each_attempt:{request.attempt}",
            definition.post_actions.after_each_attempt,
            context,
            secrets,
        )
        return AttemptResult(sent=sent, unmatched=recipients.unmatched)

    def _record_context(
        self,
        record: FollowUpRecord,
        definition: FollowUpDefinition,
        attempt: int,
        attempts: int,
        globals_: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "followup": {
                "data": record.data,
                "attempt": attempt,
                "attempts": attempts,
                "name": definition.name,
                "reconciliation_id": record.reconciliation_id,
            },
            "local": dict(record.local),
            "global": globals_,
        }

    async def _channels(
        self, session: AsyncSession, tenant_id: str, wanted: str, contacts: list[Contact]
    ) -> dict[str, Channel]:
        found: dict[str, Channel] = {}
        for contact in contacts:
            slug = contact.last_channel if wanted == "last_used" else wanted
            channel = await find_channel(session, tenant_id, slug) if slug else None
            if channel is not None:
                found[contact.id] = channel
        return found

    async def _stopped(self, record_id: str) -> bool:
        async with self._sessions() as session:
            state = (
                await session.execute(
                    select(FollowUpRecord.state).where(FollowUpRecord.id == record_id)
                )
            ).scalar_one()
        return state != "following"

    async def _send(
        self,
        tenant: Tenant,
        followup: FollowUp,
        record: FollowUpRecord,
        definition: FollowUpDefinition,
        request: AttemptInput,
        contact: Contact,
        channel: Channel,
        context: dict[str, Any],
    ) -> None:
        try:
            message = render_message(
                definition.message, {**context, "recipient": contact_context(contact)}
            )
        except TemplateProblem as exc:
            raise ApplicationError(str(exc), type="TemplateError", non_retryable=True) from exc
        if isinstance(message, CardMessage):
            for button in message.card.buttons:
                token = self._tokens.issue(
                    {
                        "t": tenant.id,
                        "f": followup.id,
                        "r": record.reconciliation_id,
                        "a": button.action,
                        "c": contact.external_id,
                    }
                )
                button.url = f"{self._public_url}/v1/actions/{token}"
        outbound = Outbound(
            tenant=tenant.slug,
            channel=channel.slug,
            idempotency_key=f"{request.key_prefix}:{request.attempt}:{contact.external_id}:{channel.slug}",
            recipient=recipient_of(contact),
            message=message,
            source={
                "type": "followup",
                "followup_id": followup.id,
                "reconciliation_id": record.reconciliation_id,
                "attempt": request.attempt,
                "attempts": request.attempts,
            },
        )

        async def remember_recipient(session: AsyncSession, _: Delivery) -> None:
            key = (record.id, contact.id)
            if await session.get(FollowUpRecipient, key) is None:
                session.add(FollowUpRecipient(record_id=record.id, contact_id=contact.id))

        await self._deliverer.deliver(
            tenant_id=tenant.id,
            contact=contact,
            channel=channel,
            outbound=outbound,
            after_sent=remember_recipient,
        )

    async def _after_attempt(
        self, record_id: str, request: AttemptInput, unmatched: list[str], failures: dict[str, str]
    ) -> None:
        async with transaction(self._sessions) as session:
            record = await session.get_one(FollowUpRecord, record_id)
            record.attempts_made = max(record.attempts_made, request.attempt)
            if record.state == "following":
                record.next_attempt_at = request.next_attempt_at
            record.problems = {
                "attempt": request.attempt,
                "unmatched_recipients": unmatched,
                "failed_sends": failures,
            }

    # Actions ------------------------------------------------------------------------------

    @activity.defn(name="run_actions")
    async def run_actions(self, request: ActionsInput) -> None:
        """After all attempts, or a pressed button's actions; each stage runs once."""
        async with self._sessions() as session:
            record = await session.get_one(FollowUpRecord, request.record_id)
            definition = await definition_at(session, record.followup_id, record.version)
            secrets = await secret_values(session, request.tenant_id, self._box)
            globals_ = await global_attributes(session, request.tenant_id)
        if request.stage.startswith("button:"):
            actions = definition.button_actions.get(request.stage.removeprefix("button:"), [])
        else:
            actions = definition.post_actions.after_all_attempts
        context = self._record_context(
            record, definition, request.attempt, definition.schedule.attempts, globals_
        )
        await self._run_stage(record.id, request.stage, actions, context, secrets)

    async def _run_stage(
        self,
        record_id: str,
        stage: str,
        actions: list[Action],
        context: dict[str, Any],
        secrets: dict[str, str],
    ) -> None:
        if not actions:
            return
        async with self._sessions() as session:
            record = await session.get_one(FollowUpRecord, record_id)
            if record.actions_done.get(stage):
                return
        local: dict[str, Any] = dict(context["local"])
        global_changes: dict[str, Any] = {}
        for action in actions:
            step_context = {
                **context,
                "local": local,
                "global": {**context["global"], **global_changes},
            }
            if isinstance(action, IntegrationAction):
                try:
                    response = await call_integration(
                        self._http, action.integration, step_context, secrets=secrets
                    )
                except IntegrationError as exc:
                    raise _integration_failure(exc) from exc
                context = {**context, action.integration.name: response}
            else:
                changes = _set_attributes([action.set_attribute], step_context)
                local.update(changes.local)
                global_changes.update(changes.global_)
        async with transaction(self._sessions) as session:
            record = await session.get_one(FollowUpRecord, record_id)
            record.local = local
            record.actions_done = {**record.actions_done, stage: True}
            await set_global_attributes(session, record.tenant_id, global_changes)

    @activity.defn(name="end_record")
    async def end_record(self, request: EndRecordInput) -> None:
        """Record who or what ended this run, and why."""
        async with transaction(self._sessions) as session:
            record = await session.get_one(FollowUpRecord, request.record_id)
            if record.state == "following":
                record.state = request.state
                record.ended_by, record.end_reason = request.stop.by, request.stop.reason
                record.ended_at = utcnow()
            record.next_attempt_at = None
