"""The service history (admins) and an interaction's transcript as a PDF (admins, and the
agents who handled it).

Registered before the inbox's router, so that `/v1/interactions/history` is this list and
not the interaction whose id is `history`.
"""

from __future__ import annotations

import calendar
import unicodedata
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos

from nudge.api.deps import AdminDep, AgentDep, PageDep, SessionDep
from nudge.api.routes.inbox import InteractionId, acting_agent
from nudge.api.routes.message_metrics import DateTime
from nudge.errors import InvalidInput
from nudge.models.channels import CHANNEL_SLUG
from nudge.models.pages import Page
from nudge.models.tables import utcnow
from nudge.store import interaction_history
from nudge.store.interaction_history import HistoryItem, Transcript, TranscriptLine

router = APIRouter(prefix="/v1/interactions", tags=["inbox"])

DEFAULT_MONTHS = 3
MAX_SPAN = timedelta(days=366)
PDF_MEDIA_TYPE = "application/pdf"
# Debian's fonts-dejavu-core: Unicode text as written when it is installed (see `_font`).
UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
UNICODE_FONT_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
LINE_HEIGHT = 5.0


# The history --------------------------------------------------------------------------------


@router.get("/history")
async def read_history(
    principal: AdminDep,
    session: SessionDep,
    page: PageDep,
    channel: Annotated[
        str | None, Query(pattern=CHANNEL_SLUG, description="Only this sender channel.")
    ] = None,
    start: Annotated[
        DateTime | None,
        Query(
            alias="from",
            description="The period's start, included, with its offset; default 3 months"
            " before `to`.",
        ),
    ] = None,
    end: Annotated[
        DateTime | None, Query(alias="to", description="The period's end, excluded; default now.")
    ] = None,
) -> Page[HistoryItem]:
    """The interactions that came in during the period (by their first message), newest
    first: case number, contact, channel, queue, agent, status, times and disposition.
    `from` must be before `to`, at most 366 days apart."""
    since, until = _period(start, end)
    items, next_cursor = await interaction_history.history_page(
        session, principal.tenant_id, page, start=since, end=until, channel=channel
    )
    return Page[HistoryItem](items=items, next_cursor=next_cursor)


def months_before(at: datetime, months: int) -> datetime:
    """The same moment ``months`` calendar months earlier (the month's last day when that
    day does not exist: 31 May → 28/29 February)."""
    month_index = at.year * 12 + at.month - 1 - months
    year, month = divmod(month_index, 12)
    day = min(at.day, calendar.monthrange(year, month + 1)[1])
    return at.replace(year=year, month=month + 1, day=day)


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    try:
        until = end.astimezone(UTC) if end is not None else utcnow()
        since = start.astimezone(UTC) if start is not None else months_before(until, DEFAULT_MONTHS)
    except (OverflowError, ValueError):
        raise InvalidInput.at(("query", "from"), "out of range once in UTC") from None
    if since >= until:
        raise InvalidInput.at(("query", "from"), "must be before `to`")
    if until - since > MAX_SPAN:
        raise InvalidInput.at(("query", "from"), f"at most {MAX_SPAN.days} days before `to`")
    return since, until


# The transcript -----------------------------------------------------------------------------


@router.get(
    "/{interaction_id}/transcript.pdf",
    response_class=Response,
    responses={200: {"content": {PDF_MEDIA_TYPE: {}}, "description": "The PDF file."}},
)
async def read_transcript(
    interaction_id: InteractionId, principal: AgentDep, session: SessionDep
) -> Response:
    """The conversation as a PDF: who wrote, when, and what (media as links), under the
    case number and its disposition. For admins, and for the agents who handled it."""
    found = await interaction_history.get_interaction(session, principal.tenant_id, interaction_id)
    if principal.role != "admin":
        agent = await acting_agent(principal, session, "inbox")
        if not await interaction_history.handled_by(session, found, agent):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"only an admin or an agent who handled case #{found.case_number}",
            )
    document = await interaction_history.transcript(session, found)
    return Response(
        content=render_transcript(document),
        media_type=PDF_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="case-{found.case_number}.pdf"'},
    )


@cache
def _unicode_font_available() -> bool:
    return UNICODE_FONT.is_file() and UNICODE_FONT_BOLD.is_file()


class _Writer:
    """Lines of text on pages, in a font that can print them."""

    def __init__(self, *, unicode_font: bool, compress: bool) -> None:
        self.pdf = FPDF(format="A4")
        self.pdf.set_compression(compress)
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.unicode = unicode_font
        if unicode_font:
            self.pdf.add_font("body", style="", fname=str(UNICODE_FONT))
            self.pdf.add_font("body", style="B", fname=str(UNICODE_FONT_BOLD))
            self.family = "body"
        else:
            self.family = "helvetica"
        self.pdf.add_page()

    def printable(self, text: str) -> str:
        """``text`` as the font can print it. Control characters become spaces or "?". The
        Unicode font prints what it has a glyph for; without it, fpdf2's core fonts encode
        only Latin-1, so anything else (emoji, most scripts) is printed as "?": a customer's
        text never fails the PDF, at worst it loses characters."""
        out = []
        font = self.pdf.current_font
        cmap = getattr(font, "cmap", None)  # core fonts have none: Latin-1
        for char in text:
            if char == "\t":
                out.append("    ")
            elif char == "\n":
                out.append(char)
            elif unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn"):
                out.append("?")
            elif cmap is not None:
                out.append(char if ord(char) in cmap else "?")
            else:
                out.append(char if ord(char) < 256 else "?")
        return "".join(out)

    def line(
        self,
        text: str,
        *,
        bold: bool = False,
        size: float = 10,
        link: str = "",
        core: bool = False,
    ) -> None:
        """A paragraph; ``core``: in Helvetica whatever the font, for our own ASCII text (the
        case number stays searchable in the file)."""
        self.pdf.set_font(
            "helvetica" if core else self.family, style="B" if bold else "", size=size
        )
        self.pdf.multi_cell(
            w=0,
            h=LINE_HEIGHT,
            text=self.printable(text),
            link=link,
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
            # Customer text is data: never markdown, never wrapped words lost.
            markdown=False,
            wrapmode=WrapMode.CHAR,
        )

    def gap(self) -> None:
        self.pdf.ln(LINE_HEIGHT / 2)


def render_transcript(
    document: Transcript, *, compress: bool = True, unicode_font: bool | None = None
) -> bytes:
    """The transcript as PDF bytes. ``unicode_font`` None: DejaVu Sans when installed."""
    use_unicode = _unicode_font_available() if unicode_font is None else unicode_font
    writer = _Writer(unicode_font=use_unicode, compress=compress)
    item = document.item
    writer.pdf.set_title(f"Case #{item.case_number}")
    writer.pdf.set_creator("Nudge")
    _header(writer, item)
    for line in document.lines:
        _message(writer, line)
    if not document.complete:
        writer.gap()
        writer.line(f"(cut after {len(document.lines)} messages)", bold=True)
    return bytes(writer.pdf.output())


def _when(at: datetime | None) -> str:
    if at is None:
        return "-"
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # SQLite gives back naive UTC times
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(writer: _Writer, item: HistoryItem) -> None:
    writer.line(f"Case #{item.case_number}", bold=True, size=16, core=True)
    contact = f"{item.contact_name} ({item.contact_id})" if item.contact_name else item.contact_id
    facts = [
        ("Contact", contact),
        ("Channel", f"{item.channel} ({item.channel_kind})"),
        ("Queue", item.queue),
        ("Agent", item.agent or "-"),
        ("Status", item.status),
        ("Received", _when(item.received_at)),
        ("Ended", _when(item.ended_at) + (f" by {item.ended_by}" if item.ended_by else "")),
    ]
    disposition = item.disposition
    if disposition is not None:
        facts += [
            ("Disposition case", disposition.case or "-"),
            ("Related to", disposition.related_to or "-"),
            ("Disposition notes", disposition.notes or "-"),
        ]
    for label, value in facts:
        writer.line(f"{label}: {value}")
    writer.gap()


def _message(writer: _Writer, line: TranscriptLine) -> None:
    writer.line(f"{_when(line.at)} - {line.who}", bold=True)
    if line.text:
        writer.line(line.text)
    for link in line.links:
        # Only web addresses become clickable; anything else is printed, not followed.
        clickable = link if link.startswith(("https://", "http://")) else ""
        writer.line(f"Media: {link}", link=clickable)
    writer.gap()
