"""Activities of one record's follow-up: its plan, each attempt, its actions, its end."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from nudge.activities.failures import template_failure
from nudge.integrations.attributes import AttributeChanges, apply_set_attributes
from nudge.integrations.calls import IntegrationError, call_integration
from nudge.messaging.channels.base import Outbound
from nudge.messaging.contacts import contact_context, recipient_of
from nudge.messaging.delivery import Deliverer, Sent
from nudge.messaging.recipients import resolve_recipients
from nudge.models.db import read_only, transaction
from nudge.models.followups import FollowUpDefinition
from nudge.models.integrations import Action, IntegrationAction, SetAttribute
from nudge.models.messages import CardMessage, render_message
from nudge.models.payloads import (
    ActionsInput,
    AttemptInput,
    AttemptResult,
    Ending,
    EndRecordInput,
    RecordEnded,
    RecordInput,
    RecordPlan,
)
from nudge.models.tables import Channel, Contact, FollowUp, FollowUpRecord, Tenant, utcnow
from nudge.models.template_context import message_context
from nudge.naming import record_workflow_id
from nudge.security import ActionTokens, SecretBox
from nudge.store.directory import find_channel, secret_values
from nudge.store.followups import (
    add_record_recipient,
    definition_at,
    global_attributes,
    set_global_attributes,
)
from nudge.templating import TemplateProblem


def _set_attributes(items: list[SetAttribute], context: dict[str, Any]) -> AttributeChanges:
    """Set Attributes; a template that cannot render will not render on a retry either."""
    try:
        return apply_set_attributes(items, context)
    except TemplateProblem as exc:
        raise template_failure(exc) from exc


class FollowUpRecordActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        http: httpx.AsyncClient,
        deliverer: Deliverer,
        tokens: ActionTokens,
        public_url: str,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._http = http
        self._deliverer = deliverer
        self._tokens = tokens
        self._public_url = public_url.rstrip("/")

    @activity.defn(name="load_record_plan")
    async def load_record_plan(self, request: RecordInput) -> RecordPlan:
        """The schedule of the version this record run is pinned to."""
        async with read_only(self._sessions)() as session:
            definition = await definition_at(session, request.followup_id, request.version)
        return RecordPlan(
            name=definition.name,
            attempts=definition.schedule.attempts,
            notify_minutes=definition.schedule.notify_minutes,
            on_reply=definition.exit.on_reply,
            send_window=definition.schedule.send_window.model_dump(exclude_none=True)
            if definition.schedule.send_window
            else None,
        )

    @activity.defn(name="run_attempt")
    async def run_attempt(self, request: AttemptInput) -> AttemptResult:
        """Resolve recipients, render and send to each (effectively once), then after-each."""
        async with read_only(self._sessions)() as session:
            record = await session.get_one(FollowUpRecord, request.record_id)
            not_followed = _not_followed(record, request.generation, sent=0)
            if not_followed is not None:
                return not_followed
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
                    self._http,
                    definition.recipients.integration,
                    context,
                    secrets=secrets,
                    idempotency_key=f"{request.key_prefix}:{request.attempt}:recipients",
                )
            except IntegrationError as exc:
                raise exc.activity_failure() from exc
            changes = _set_attributes(
                definition.recipients.set_attributes, {**context, "recipient_data": source}
            )
            context["local"] = {**context["local"], **changes.local}
        async with self._sessions() as session:
            recipients = await resolve_recipients(session, tenant.id, definition.recipients, source)
            channels = await self._channels(
                session, tenant.id, definition.channel, recipients.contacts
            )

        sent, failures, unknown = 0, dict[str, str](), list[str]()
        for contact in recipients.contacts:
            # A worker killed mid-attempt is noticed within the heartbeat timeout, not the
            # attempt's start-to-close timeout.
            activity.heartbeat()
            not_followed = await self._not_followed(record.id, request.generation, sent)
            if not_followed is not None:
                not_followed.unmatched, not_followed.unknown = recipients.unmatched, len(unknown)
                return not_followed
            channel = channels.get(contact.id)
            if channel is None:
                failures[contact.external_id] = "no channel: the contact has not written on any"
                continue
            try:
                outcome = await self._send(
                    tenant, followup, record, definition, request, contact, channel, context
                )
            except ApplicationError as exc:
                if not exc.non_retryable:
                    raise
                failures[contact.external_id] = str(exc)
                continue
            if outcome.unknown:
                unknown.append(contact.external_id)
            else:
                sent += 1
        await self._after_attempt(record.id, request, recipients.unmatched, failures, unknown)
        await self._run_stage(
            tenant,
            record.id,
            f"after_each_attempt:{request.attempt}",
            definition.post_actions.after_each_attempt,
            context,
            secrets,
        )
        return AttemptResult(sent=sent, unmatched=recipients.unmatched, unknown=len(unknown))

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

    async def _not_followed(
        self, record_id: str, generation: int | None, sent: int
    ) -> AttemptResult | None:
        async with read_only(self._sessions)() as session:
            record = await session.get_one(FollowUpRecord, record_id)
            return _not_followed(record, generation, sent)

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
    ) -> Sent:
        try:
            message = render_message(
                definition.message, message_context(contact_context(contact), **context)
            )
        except TemplateProblem as exc:
            raise template_failure(exc) from exc
        if isinstance(message, CardMessage):
            for button in message.card.buttons:
                token = self._tokens.issue(
                    {
                        "t": tenant.id,
                        "f": followup.id,
                        "r": record.reconciliation_id,
                        "a": button.action,
                        "c": contact.external_id,
                        # A record that comes back is followed anew: old buttons stay old.
                        "g": str(record.generation),
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
                "generation": record.generation,
            },
            belongs_to=f"record:{record.id}",
        )

        async def remember_recipient(session: AsyncSession) -> None:
            # With the claim, before the provider is called: a reply that arrives a moment
            # after the message finds whom it ends.
            await add_record_recipient(session, record.id, contact.id)

        return await self._deliverer.deliver(
            tenant_id=tenant.id,
            contact=contact,
            channel=channel,
            outbound=outbound,
            on_claim=remember_recipient,
        )

    async def _after_attempt(
        self,
        record_id: str,
        request: AttemptInput,
        unmatched: list[str],
        failures: dict[str, str],
        unknown: list[str],
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
                # Not sent again: an earlier try may have reached them (see GET /v1/deliveries).
                "unknown_sends": unknown,
            }

    # Actions ------------------------------------------------------------------------------

    @activity.defn(name="run_actions")
    async def run_actions(self, request: ActionsInput) -> None:
        """After all attempts, or a pressed button's actions; each action runs once."""
        async with read_only(self._sessions)() as session:
            record = await session.get_one(FollowUpRecord, request.record_id)
            if request.generation is not None and record.generation != request.generation:
                return  # the record came back: its new generation's run acts for it
            tenant = await session.get_one(Tenant, request.tenant_id)
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
        await self._run_stage(tenant, record.id, request.stage, actions, context, secrets)

    async def _run_stage(
        self,
        tenant: Tenant,
        record_id: str,
        stage: str,
        actions: list[Action],
        context: dict[str, Any],
        secrets: dict[str, str],
    ) -> None:
        """Run a stage's actions in order, each recorded done with its outputs as soon as it
        succeeds: a retry (one action failed, the worker died) skips what was done, feeding
        later templates the outputs it recorded, so an "approve" reaches the ITSM once."""
        if not actions:
            return
        async with read_only(self._sessions)() as session:
            record = await session.get_one(FollowUpRecord, record_id)
            if record.actions_done.get(stage):
                return
            done: dict[str, Any] = dict(record.actions_done)
            key_prefix = _actions_key_prefix(tenant, record)
        local: dict[str, Any] = dict(context["local"])
        global_changes: dict[str, Any] = {}
        for index, action in enumerate(actions):
            activity.heartbeat()
            outputs = done.get(_action_key(stage, index))
            if not isinstance(outputs, dict):
                step_context = {
                    **context,
                    "local": local,
                    "global": {**context["global"], **global_changes},
                }
                outputs = await self._run_action(
                    action, step_context, secrets, f"{key_prefix}:{stage}:{index}"
                )
                await self._action_done(
                    record_id, stage, index, outputs, {**local, **outputs["local"]}
                )
            local.update(outputs["local"])
            global_changes.update(outputs["global"])
            if "response" in outputs:
                context = {**context, outputs["name"]: outputs["response"]}
        async with transaction(self._sessions) as session:
            record = await session.get_one(FollowUpRecord, record_id)
            record.local = local
            record.actions_done = {**record.actions_done, stage: True}

    async def _run_action(
        self,
        action: Action,
        context: dict[str, Any],
        secrets: dict[str, str],
        idempotency_key: str,
    ) -> dict[str, Any]:
        """One action's outputs: its attribute changes, and an integration's response."""
        if isinstance(action, IntegrationAction):
            try:
                response = await call_integration(
                    self._http,
                    action.integration,
                    context,
                    secrets=secrets,
                    idempotency_key=idempotency_key,
                )
            except IntegrationError as exc:
                raise exc.activity_failure() from exc
            return {
                "local": {},
                "global": {},
                "name": action.integration.name,
                "response": response,
            }
        changes = _set_attributes([action.set_attribute], context)
        return {"local": changes.local, "global": changes.global_}

    async def _action_done(
        self,
        record_id: str,
        stage: str,
        index: int,
        outputs: dict[str, Any],
        local: dict[str, Any],
    ) -> None:
        async with transaction(self._sessions) as session:
            record = await session.get_one(FollowUpRecord, record_id)
            record.local = local
            record.actions_done = {**record.actions_done, _action_key(stage, index): outputs}
            await set_global_attributes(session, record.tenant_id, outputs["global"])

    @activity.defn(name="end_record")
    async def end_record(self, request: EndRecordInput) -> RecordEnded | None:
        """Record who or what ended this run, and why; only its own generation's row."""
        async with transaction(self._sessions) as session:
            record = await session.get_one(FollowUpRecord, request.record_id)
            if request.generation is not None and record.generation != request.generation:
                # The record came back meanwhile: the new generation is not ended, and if it
                # is followed, its start found this run open, so this run goes on for it.
                if record.state == "following" and record.generation > request.generation:
                    return RecordEnded(generation=record.generation, version=record.version)
                return RecordEnded()
            if record.state == "following":
                record.state = request.state
                record.ended_by, record.end_reason = request.stop.by, request.stop.reason
                record.ended_at = utcnow()
            record.next_attempt_at = None
        return RecordEnded()


def _not_followed(
    record: FollowUpRecord, generation: int | None, sent: int
) -> AttemptResult | None:
    """None while the record is followed by the run of this generation; otherwise the
    attempt's result: stopped, saying why (the database holds the end its signal brings)."""
    if generation is not None and record.generation != generation:
        return AttemptResult(sent=sent, stopped=True, superseded=True)
    if record.state == "following":
        return None
    ended = Ending(by=record.ended_by or "unknown", reason=record.end_reason or record.state)
    return AttemptResult(sent=sent, stopped=True, state=record.state, ended=ended)


def _action_key(stage: str, index: int) -> str:
    return f"{stage}#{index}"


def _actions_key_prefix(tenant: Tenant, record: FollowUpRecord) -> str:
    """Idempotency keys of actions: the record's run and generation, then stage and index."""
    workflow_id = record_workflow_id(tenant.slug, record.followup_id, record.reconciliation_id)
    return f"{workflow_id}#{record.generation}"
