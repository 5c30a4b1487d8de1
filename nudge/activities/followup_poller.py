"""Activities of a follow-up's poller: poll and reconcile, start new record runs, stop them all."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from nudge.activities.failures import permanent, template_failure
from nudge.errors import NotFound
from nudge.integrations.attributes import AttributeChanges, apply_set_attributes
from nudge.integrations.calls import IntegrationError, call_integration
from nudge.integrations.extraction import Extraction, ExtractionError, extract_records
from nudge.models.db import transaction
from nudge.models.followups import FollowUpDefinition
from nudge.models.payloads import (
    Ending,
    PollInput,
    PollResult,
    RecordInput,
    StopRecordsInput,
)
from nudge.models.signals import RESOLVE_RECORD, STOP_RECORD
from nudge.models.tables import FollowUp, utcnow
from nudge.runs.followups import signal_records, start_records
from nudge.security import SecretBox
from nudge.store.directory import secret_values
from nudge.store.followups import (
    definition_at,
    get_followup,
    global_attributes,
    mark_workflows_started,
    reconcile_records,
    set_global_attributes,
    stop_following_records,
)
from nudge.templating import TemplateProblem

log = logging.getLogger(__name__)

# A poll that starts many runs tells Temporal it is alive this often.
HEARTBEAT_EVERY = 200


class FollowUpPollerActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        http: httpx.AsyncClient,
        task_queue: str,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._http = http
        self._task_queue = task_queue

    @activity.defn(name="poll_followup")
    async def poll_followup(self, request: PollInput) -> PollResult:
        """Run the integrations, set attributes, reconcile the records, start new runs."""
        async with self._sessions() as session:
            try:
                followup = await get_followup(session, request.tenant_id, request.followup_id)
            except NotFound as exc:
                # Deleted: its poller is being stopped; polling again will not bring it back.
                raise permanent("FollowUpGone", str(exc)) from exc
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
                RecordInput(
                    tenant_id=request.tenant_id,
                    tenant=request.tenant,
                    followup_id=request.followup_id,
                    record_id=r.id,
                    reconciliation_id=r.reconciliation_id,
                    version=r.version,
                    generation=r.generation,
                    time_scale=request.time_scale,
                )
                for r in reconciliation.to_start
            ]
            resolved = [r.reconciliation_id for r in reconciliation.resolved]
            # Meant for the generation that was resolved: a run that has gone on as a newer
            # generation of the record (it came back meanwhile) ignores it.
            by_generation: dict[int, list[str]] = {}
            for r in reconciliation.resolved:
                by_generation.setdefault(r.generation, []).append(r.reconciliation_id)

        await self._start_records(definition.name, to_start)
        gone = Ending(by="poll", reason="the record is no longer returned by the integrations")
        for generation, ids in by_generation.items():
            await signal_records(
                activity.client(),
                request.tenant,
                request.followup_id,
                ids,
                RESOLVE_RECORD,
                gone.model_copy(update={"generation": generation}),
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
                raise exc.activity_failure() from exc
        try:
            changes = apply_set_attributes(
                extraction_def.set_attributes, {**responses, "global": globals_, "local": {}}
            )
        except TemplateProblem as exc:
            # A template that cannot render will not render on a retry either.
            raise template_failure(exc) from exc
        try:
            extraction = extract_records(
                extraction_def.looping_element, extraction_def.reconciliation_id, responses
            )
        except ExtractionError as exc:
            raise permanent("ExtractionFailed", str(exc)) from exc
        return changes, extraction

    async def _report_poll(self, followup_id: str, report: dict[str, Any]) -> None:
        attempt = activity.info().attempt
        async with transaction(self._sessions) as session:
            followup = await session.get_one(FollowUp, followup_id)
            followup.last_poll = {"at": utcnow().isoformat(), "attempt": attempt, **report}

    async def _start_records(self, followup_name: str, records: list[RecordInput]) -> None:
        """Start each new record's run; a retried poll finds them running and starts none twice."""
        started: list[str] = []

        def on_started(record: RecordInput) -> None:
            started.append(record.record_id)
            if len(started) % HEARTBEAT_EVERY == 0:
                activity.heartbeat(len(started))

        try:
            await start_records(
                activity.client(), self._task_queue, followup_name, records, on_started=on_started
            )
        finally:
            if started:
                async with transaction(self._sessions) as session:
                    await mark_workflows_started(session, started)

    @activity.defn(name="stop_followup_records")
    async def stop_followup_records(self, request: StopRecordsInput) -> int:
        """Stop every record run of a follow-up that is being deactivated or deleted."""
        async with transaction(self._sessions) as session:
            # Stopped in the database first: an attempt in flight checks it before each send.
            stopped = await stop_following_records(
                session,
                request.tenant_id,
                request.followup_id,
                request.stop.by,
                request.stop.reason,
            )
        await signal_records(
            activity.client(),
            request.tenant,
            request.followup_id,
            stopped,
            STOP_RECORD,
            request.stop,
        )
        return len(stopped)
