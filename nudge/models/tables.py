"""SQLAlchemy tables. Every tenant-owned row carries ``tenant_id``; queries always filter on it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JsonType = JSON().with_variant(JSONB(), "postgresql")


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JsonType,
    }


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The key's first characters, shown in listings so an admin can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16), default="")
    agent: Mapped[str | None] = mapped_column(String(200))
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id"),
        Index("ix_contacts_tenant_phone", "tenant_id", "phone"),
        Index("ix_contacts_tenant_whatsapp", "tenant_id", "whatsapp_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    # Digits only, as WhatsApp writes it (`wa_id`); None: the phone's digits.
    whatsapp_id: Mapped[str | None] = mapped_column(String(32))
    chat_id: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_channel: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Group(Base):
    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[str] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Channel(Base):
    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Credentials (webhook secret, SMTP password) as one encrypted JSON object.
    sealed_credentials: Mapped[str | None] = mapped_column(Text)
    # Channel slugs tried in order for a recipient when a send here fails for good, or is
    # not delivered within `fallback_after_minutes`.
    fallback: Mapped[list[str] | None] = mapped_column(JsonType)
    fallback_after_minutes: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Secret(Base):
    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    sealed_value: Mapped[str] = mapped_column(Text)
    # The only hosts the secret may be sent to (normalized names); None: any host.
    allowed_hosts: Mapped[list[str] | None] = mapped_column(JsonType)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Notification(Base):
    """One individual send requested through ``POST /v1/notifications``."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "idempotency_key", name="uq_notifications_tenant_idempotency_key"
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(63))
    # `last_used` is resolved when the notification is accepted, so retries use one channel.
    resolved_channel: Mapped[str] = mapped_column(String(63))
    message: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    delivery_id: Mapped[str | None] = mapped_column(ForeignKey("deliveries.id"))
    # The client's `Idempotency-Key`: a retried request finds this notification again.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Delivery(Base):
    """One send to one recipient on one channel; the unique key makes it effectively once."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_tenant_status", "tenant_id", "status", "created_at"),
        Index("ix_deliveries_provider_message", "tenant_id", "channel", "provider_message_id"),
        Index("ix_deliveries_contact_channel", "contact_id", "channel", "created_at"),
        Index("ix_deliveries_fallback_of", "fallback_of"),
        Index("ix_deliveries_belongs_to", "belongs_to", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(500), unique=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), default="sending")
    tries: Mapped[int] = mapped_column(Integer, default=0)
    provider_response: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    # While in the future, one try is calling the provider: no other try may.
    leased_until: Mapped[datetime | None] = mapped_column()
    # The rendered message, its recipient and source as claimed, so an operator can resend
    # a send whose outcome is unknown exactly as it was meant to leave.
    outbound: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # What the provider calls it (a `wamid`, a Twilio sid): how its receipts find it.
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[str | None] = mapped_column(String(40))
    segments: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[datetime | None] = mapped_column()
    read_at: Mapped[datetime | None] = mapped_column()
    failed_at: Mapped[datetime | None] = mapped_column()
    # The contact's first answer on this channel within 24 hours of this send.
    replied_at: Mapped[datetime | None] = mapped_column()
    # A fallback try: the delivery on the channel before it that failed or was not delivered.
    fallback_of: Mapped[str | None] = mapped_column(String(32))
    # What sent it: `notification:<id>`, `record:<id>`, `enrollment:<id>` or `campaign:<id>`.
    belongs_to: Mapped[str | None] = mapped_column(String(80))
    # The WhatsApp template's name, or the message's kind: how metrics group by template.
    template: Mapped[str | None] = mapped_column(String(512))
    updated_at: Mapped[datetime | None] = mapped_column()


class DeliveryReceipt(Base):
    """A provider's word on a message it took (sent, delivered, read, failed), each once.

    Kept also when no delivery has the message id yet: the receipt can arrive before the
    provider's answer to the send is stored, and is applied when it is.
    """

    __tablename__ = "receipts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "channel", "provider_message_id", "status"),
        Index("ix_receipts_unmatched", "delivery_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(63))
    provider_message_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column()
    error_code: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    delivery_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Message(Base):
    """A contact's conversation history, both directions."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_contact_at", "contact_id", "at"),
        Index("ix_messages_contact_channel_at", "contact_id", "channel", "at"),
        UniqueConstraint("tenant_id", "external_message_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(24))
    text: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    delivery_id: Mapped[str | None] = mapped_column(ForeignKey("deliveries.id"))
    # The sender's own id for incoming events, so a repeated event is stored once.
    external_message_id: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class FollowUp(Base):
    """A follow-up definition; its content lives in versions, the newest being current."""

    __tablename__ = "followups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="inactive")
    version: Mapped[int] = mapped_column(Integer, default=1)
    # What the newest poll found, or why it failed (records skipped without an id included).
    last_poll: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FollowUpVersion(Base):
    """Every saved definition; a record run stays on the version it started with."""

    __tablename__ = "followup_versions"

    followup_id: Mapped[str] = mapped_column(
        ForeignKey("followups.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FollowUpRecord(Base):
    """One record of the external system being followed, keyed by its reconciliation id."""

    __tablename__ = "followup_records"
    __table_args__ = (
        UniqueConstraint("followup_id", "reconciliation_id"),
        Index("ix_followup_records_state", "followup_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    followup_id: Mapped[str] = mapped_column(ForeignKey("followups.id", ondelete="CASCADE"))
    reconciliation_id: Mapped[str] = mapped_column(String(200))
    # following → resolved | completed | stopped; a resolved record that comes back follows again.
    state: Mapped[str] = mapped_column(String(16), default="following")
    version: Mapped[int] = mapped_column(Integer)
    # Counts the times this record started being followed, so each run has its own keys.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    workflow_started: Mapped[bool] = mapped_column(default=False)
    attempts_made: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    local: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What went wrong for this record (unmatched recipients, failed sends), newest attempt.
    problems: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Post-action stages already run ("after_each_attempt:2": true), and each action done
    # ("after_each_attempt:2#0": its outputs), so a retry skips them and later templates
    # still see what they answered.
    actions_done: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ended_by: Mapped[str | None] = mapped_column(String(200))
    end_reason: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()


class FollowUpRecipient(Base):
    """Who was notified for a record, so a reply from them can end its follow-up."""

    __tablename__ = "followup_recipients"

    record_id: Mapped[str] = mapped_column(
        ForeignKey("followup_records.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[str] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class GlobalAttribute(Base):
    """Tenant-wide attributes set by Set Attributes with scope `global`."""

    __tablename__ = "global_attributes"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[Any] = mapped_column(JsonType)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Journey(Base):
    """A journey (customer workflow); its content lives in versions, the newest being current."""

    __tablename__ = "journeys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # draft → published → stopped; edited only while not published.
    status: Mapped[str] = mapped_column(String(16), default="draft")
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The trigger's type, so message events find the journeys they may start without
    # reading every definition.
    trigger_type: Mapped[str] = mapped_column(String(32), default="api")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JourneyVersion(Base):
    """Every saved journey definition; an enrollment stays on the version it started with."""

    __tablename__ = "journey_versions"

    journey_id: Mapped[str] = mapped_column(
        ForeignKey("journeys.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Enrollment(Base):
    """One contact's way through one journey version."""

    __tablename__ = "enrollments"
    __table_args__ = (
        Index("ix_enrollments_contact_state", "contact_id", "state"),
        Index("ix_enrollments_journey_state", "journey_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    journey_id: Mapped[str] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    # active → completed | exited | stopped | handed_over
    state: Mapped[str] = mapped_column(String(16), default="active")
    current_step: Mapped[str | None] = mapped_column(String(63))
    waiting_until: Mapped[datetime | None] = mapped_column()
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The newest reply to an `ask` (templates see it as `answer`).
    answer: Mapped[str | None] = mapped_column(Text)
    # The enrollment that handed this contact over with a `trigger_journey` step.
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="SET NULL"), index=True
    )
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    ended_by: Mapped[str | None] = mapped_column(String(200))
    end_reason: Mapped[str | None] = mapped_column(Text)
    # Set by stopping the whole journey: this contact is never enrolled in it again.
    ejected: Mapped[bool] = mapped_column(default=False)


# A contact is active at most once at a time in the same journey (a partial unique index).
Index(
    "uq_enrollments_active",
    Enrollment.journey_id,
    Enrollment.contact_id,
    unique=True,
    sqlite_where=Enrollment.state == "active",
    postgresql_where=Enrollment.state == "active",
)


class OutboxEntry(Base):
    """What is left to tell Temporal about something the database already holds.

    Written in the same transaction as the change it belongs to (a message, an enrollment,
    a stop), relayed at once after the commit and, when that fails or the process dies
    first, by the relay of every worker until done: a crash or a Temporal outage delays a
    start or a signal, it never loses one.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "done_at", "due_at"),
        Index("ix_outbox_event", "tenant_id", "event_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # The accepted event these entries complete (`message:<message_id>`), so a client's
    # retry of the event can finish what the first try left.
    event_key: Mapped[str | None] = mapped_column(String(250))
    # `start` a workflow or `signal` one.
    action: Mapped[str] = mapped_column(String(8))
    workflow_id: Mapped[str] = mapped_column(String(500))
    # The registered workflow name (start) or signal name (signal).
    name: Mapped[str] = mapped_column(String(100))
    # The workflow's input or the signal's argument, as JSON (no secrets: ids and text).
    payload: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # Start options: search attributes, summary, conflict rules.
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # A signal whose run may not exist yet (an enrollment whose start is still to be
    # relayed) waits for it until this moment instead of being dropped.
    wait_for_run_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column()
    tries: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None] = mapped_column()
    # delivered | started | no_run | gave_up
    outcome: Mapped[str | None] = mapped_column(String(16))


class Campaign(Base):
    """One message to every row of a CSV; its rows wait in ``campaign_rows``."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    # The `campaign` part as accepted (message, mode, start, columns).
    definition: Mapped[dict[str, Any]] = mapped_column()
    start_at: Mapped[datetime | None] = mapped_column()
    total: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CampaignRow(Base):
    """One recipient of a campaign, with the CSV values its templates see."""

    __tablename__ = "campaign_rows"
    __table_args__ = (Index("ix_campaign_rows_status", "campaign_id", "status", "line"),)

    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    # The CSV line (the header is line 1): the row's id, and the order rows go in.
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(63))
    values: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="queued")
    delivery_id: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime | None] = mapped_column()


class BusinessHours(Base):
    """A tenant's named opening schedule (`default`, or one per queue)."""

    __tablename__ = "business_hours"
    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(63))
    # The schedule as PUT (timezone, week, holidays, replies, absence).
    definition: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ClosedReply(Base):
    """What a contact was told during one closed period (once per period, or per day for
    the absence message), and whether they asked to be told when it opens."""

    __tablename__ = "closed_replies"
    __table_args__ = (
        UniqueConstraint("schedule_id", "contact_id", "kind", "period"),
        Index("ix_closed_replies_waiting", "schedule_id", "kind", "notified_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    schedule_id: Mapped[str] = mapped_column(ForeignKey("business_hours.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    # `unavailable` (the closed message), `subscription` (notify me), `absence`.
    kind: Mapped[str] = mapped_column(String(16))
    # The closed period (its start, ISO) or, for absence, the day: what "once" counts in.
    period: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    notified_at: Mapped[datetime | None] = mapped_column()
    delivery_id: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SurveyResponse(Base):
    """One survey question a journey sent a contact, and the score they gave (none yet, or
    `invalid` when the reply was no score of the scale)."""

    __tablename__ = "survey_responses"
    __table_args__ = (
        # One question per visit of the step: a retry of the send finds its row.
        UniqueConstraint("enrollment_id", "step_id", "visit"),
        Index("ix_survey_responses_sent", "tenant_id", "sent_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    journey_id: Mapped[str] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    enrollment_id: Mapped[str] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[str] = mapped_column(String(63))
    visit: Mapped[int] = mapped_column(Integer, default=1)
    # `csat` (1-5) or `nps` (0-10).
    kind: Mapped[str] = mapped_column(String(8))
    # sent | answered | invalid
    status: Mapped[str] = mapped_column(String(16), default="sent")
    score: Mapped[int | None] = mapped_column(Integer)
    # The reply as written (the score's, or the one that was no score).
    reply: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column()


class AccessProfile(Base):
    """What the agents given this profile may use (`inbox`, `journeys`, …)."""

    __tablename__ = "access_profiles"
    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    modules: Mapped[list[str]] = mapped_column(JsonType)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Queue(Base):
    """Where interactions wait for an agent; agents work on the queues they are in."""

    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class QueueChannel(Base):
    """A channel's default queue: where its new interactions go (one per channel)."""

    __tablename__ = "queue_channels"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(63), primary_key=True)
    queue_id: Mapped[str] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"), index=True)


class Agent(Base):
    """A person who answers contacts in the inbox; agent API keys name them by `slug`."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    # A profile in use cannot be deleted (the API names its agents): no cascade.
    profile_id: Mapped[str | None] = mapped_column(ForeignKey("access_profiles.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AgentQueue(Base):
    __tablename__ = "agent_queues"

    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    queue_id: Mapped[str] = mapped_column(
        ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class InteractionCounter(Base):
    """The tenant's last case number: one row, bumped in the transaction that opens a case."""

    __tablename__ = "interaction_counters"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    last: Mapped[int] = mapped_column(Integer, default=0)


class Interaction(Base):
    """One conversation of a contact on one channel, as the inbox works on it.

    Besides what agents see, it keeps the current stay in a queue (`queued_at`,
    `assigned_at`, `first_response_at`, `awaiting_since`) so that each event of
    ``interaction_events`` can carry the time it measures.
    """

    __tablename__ = "interactions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "case_number"),
        Index("ix_interactions_queue", "tenant_id", "queue", "status"),
        Index("ix_interactions_assignee", "tenant_id", "assignee"),
        Index("ix_interactions_contact", "contact_id", "channel"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    case_number: Mapped[int] = mapped_column(Integer)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(63))
    # chat, email, facebook, instagram, sms, twitter or whatsapp; `channel_rank` counts down
    # that list (chat is 6), so `sort=channel` is descending like the other sorts.
    channel_kind: Mapped[str] = mapped_column(String(16))
    channel_rank: Mapped[int] = mapped_column(Integer)
    digital_id: Mapped[str | None] = mapped_column(String(320))
    queue: Mapped[str] = mapped_column(String(63))
    assignee: Mapped[str | None] = mapped_column(String(200))
    # new | open | resolved | ended
    status: Mapped[str] = mapped_column(String(16), default="new")
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    priority_rank: Mapped[int] = mapped_column(Integer, default=1)
    unread: Mapped[int] = mapped_column(Integer, default=0)
    preview: Mapped[str] = mapped_column(String(200), default="")
    outbound: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    assigned_at: Mapped[datetime | None] = mapped_column()
    first_response_at: Mapped[datetime | None] = mapped_column()
    # The contact's oldest message no agent has answered yet.
    awaiting_since: Mapped[datetime | None] = mapped_column()
    replies: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[datetime | None] = mapped_column()
    ended_by: Mapped[str | None] = mapped_column(String(200))
    disposition: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


# A contact has at most one interaction that is not ended per channel (a partial unique index).
Index(
    "uq_interactions_current",
    Interaction.tenant_id,
    Interaction.contact_id,
    Interaction.channel,
    unique=True,
    sqlite_where=Interaction.status != "ended",
    postgresql_where=Interaction.status != "ended",
)


class InteractionTag(Base):
    __tablename__ = "interaction_tags"

    interaction_id: Mapped[str] = mapped_column(
        ForeignKey("interactions.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(50), primary_key=True, index=True)


class InteractionEvent(Base):
    """What happened to an interaction (its history), each with what service metrics need:
    the queue and agent it counts for, the time it measures, and how a stay in a queue
    ended (`outcome`: attended, abandoned or lost)."""

    __tablename__ = "interaction_events"
    __table_args__ = (
        Index("ix_interaction_events_tenant_at", "tenant_id", "at"),
        Index("ix_interaction_events_interaction", "interaction_id", "at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    interaction_id: Mapped[str] = mapped_column(ForeignKey("interactions.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column()
    queue: Mapped[str] = mapped_column(String(63))
    agent: Mapped[str | None] = mapped_column(String(200))
    seconds: Mapped[float | None] = mapped_column()
    outcome: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


class ContactNote(Base):
    """An agent's note on a contact: only its author sees it."""

    __tablename__ = "contact_notes"
    __table_args__ = (Index("ix_contact_notes_author", "tenant_id", "contact_id", "agent"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    interaction_id: Mapped[str | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
