"""When a send may go: its window's next opening, from the run's own clock."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from nudge.integrations.extraction import recipient_values
from nudge.models.business_hours import BusinessHoursPut, next_opening_after
from nudge.models.db import read_only
from nudge.models.payloads import WindowInput, WindowPlan
from nudge.models.send_windows import SendWindow
from nudge.models.tables import Contact, Enrollment, FollowUpRecord
from nudge.store.business_hours import find_business_hours, schedule_of
from nudge.store.directory import find_contact_by
from nudge.store.followups import definition_at


class SendWindowActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @activity.defn(name="send_window_opens")
    async def window_opens(self, request: WindowInput) -> WindowPlan:
        """None while the window is open; else when it opens, said for people. A schedule
        that no longer exists, or never opens, does not hold a send back for ever: it goes."""
        window = SendWindow.model_validate(request.window)
        at = datetime.fromisoformat(request.at)
        async with read_only(self._sessions)() as session:
            schedule = await self._schedule(session, request, window)
        if schedule is None:
            return WindowPlan(opens_at=None)
        opens = next_opening_after(schedule, at)
        if opens is None or opens <= at:
            return WindowPlan(opens_at=None)
        local = opens.astimezone(ZoneInfo(schedule.timezone))
        return WindowPlan(
            opens_at=opens.isoformat(),
            describe=f"opens {local:%A %H:%M} {schedule.timezone}",
        )

    async def _schedule(
        self, session: AsyncSession, request: WindowInput, window: SendWindow
    ) -> BusinessHoursPut | None:
        if window.business_hours is not None:
            row = await find_business_hours(session, request.tenant_id, window.business_hours)
            return schedule_of(row) if row is not None else None
        assert window.recipient_local is not None
        zone = await self._recipient_zone(session, request) or "UTC"
        return window.recipient_local.as_schedule(zone)

    async def _recipient_zone(self, session: AsyncSession, request: WindowInput) -> str | None:
        """The contact's time zone: the enrollment's, or a record's first recipient's."""
        if request.enrollment_id is not None:
            enrollment = await session.get(Enrollment, request.enrollment_id)
            contact = await session.get(Contact, enrollment.contact_id) if enrollment else None
            return contact.timezone if contact else None
        if request.record_id is None:
            return None
        record = await session.get(FollowUpRecord, request.record_id)
        if record is None:
            return None
        definition = await definition_at(session, record.followup_id, record.version)
        user = definition.recipients.user
        if user is None:
            return None
        for value in recipient_values(user.source, record.data):
            contact = await find_contact_by(session, request.tenant_id, user.match_on, value)
            if contact is not None and contact.timezone:
                return contact.timezone
        return None
