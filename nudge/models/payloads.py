"""Inputs and results of workflows, activities and signals.

One model each, so fields can be added without breaking running workflows. They carry
ids, never secrets or large data: history is kept forever and shown to operators.
This module is imported by workflow code and must stay free of I/O.
"""

from __future__ import annotations

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
