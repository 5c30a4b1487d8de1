"""Inputs and results of workflows, activities and signals.

One model each, so fields can be added without breaking running workflows. They carry
ids, never secrets or large data: history is kept forever and shown to operators.
This module is imported by workflow code and must stay free of I/O.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class SendNotificationInput(BaseModel):
    tenant_id: str
    tenant: str
    notification_id: str
    contact: str
    channel: str


class DeliverNotificationInput(BaseModel):
    tenant_id: str
    notification_id: str
    idempotency_key: str


class DeliveryResult(BaseModel):
    delivery_id: str
    channel: str
    already_sent: bool = False


class NotificationFailureInput(BaseModel):
    tenant_id: str
    notification_id: str
    reason: str


# Follow-ups ---------------------------------------------------------------------------


class PollerInput(BaseModel):
    tenant_id: str
    tenant: str
    followup_id: str
    time_scale: float = 1.0


class PollInput(BaseModel):
    tenant_id: str
    tenant: str
    followup_id: str
    time_scale: float = 1.0


class PollResult(BaseModel):
    name: str
    polling_minutes: int
    found: int = 0
    new: int = 0
    resolved: int = 0
    skipped: int = 0


class Stop(BaseModel):
    """Who ended a run and why: shown in the API and in the run's details."""

    by: str
    reason: str


class StopRecordsInput(BaseModel):
    tenant_id: str
    tenant: str
    followup_id: str
    stop: Stop


class RecordInput(BaseModel):
    tenant_id: str
    tenant: str
    followup_id: str
    record_id: str
    reconciliation_id: str
    version: int
    generation: int = 1
    time_scale: float = 1.0


class RecordPlan(BaseModel):
    name: str
    attempts: int
    notify_minutes: int
    on_reply: bool


class AttemptInput(BaseModel):
    tenant_id: str
    record_id: str
    attempt: int
    attempts: int
    key_prefix: str
    next_attempt_at: datetime | None = None


class AttemptResult(BaseModel):
    sent: int
    unmatched: list[str] = []
    stopped: bool = False


class ButtonPress(BaseModel):
    action: str
    by: str


class ActionsInput(BaseModel):
    tenant_id: str
    record_id: str
    stage: str  # "after_all_attempts" or "button:<action>"
    attempt: int


class EndRecordInput(BaseModel):
    tenant_id: str
    record_id: str
    state: str
    stop: Stop
