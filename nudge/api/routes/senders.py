"""Senders: the health of each WhatsApp number and SMS sender, as JSON or a CSV file."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Query, Request, Response

from nudge.api.deps import AdminDep, SecretBoxDep, SessionDep
from nudge.messaging.sender_health import read_senders, senders_health
from nudge.models.sender_health import Health, SenderHealth, SenderHealthList

router = APIRouter(prefix="/v1/senders", tags=["senders"])

CSV_MEDIA_TYPE = "text/csv"
CSV_FILENAME = "sender-health.csv"
CSV_COLUMNS = tuple(SenderHealth.model_fields)
# What a spreadsheet takes for the start of a formula (OWASP's list): such a cell gets a
# leading quote, so provider text (a reason, an error) is shown, never run.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The senders' health: JSON, or a CSV file (one row per sender, the"
        " fields as columns) with `format=csv` or `Accept: text/csv`.",
        "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


def _http(request: Request) -> httpx.AsyncClient:
    http: httpx.AsyncClient = request.app.state.http
    return http


@router.get("/health", response_model=SenderHealthList, responses=_CSV_RESPONSE)
async def read_sender_health(
    request: Request,
    response: Response,
    principal: AdminDep,
    session: SessionDep,
    box: SecretBoxDep,
    health: Annotated[
        Health | None, Query(description="Only the senders in this health, e.g. `bad`.")
    ] = None,
    output: Annotated[
        Literal["json", "csv"] | None,
        Query(
            alias="format",
            description="`csv` for a CSV file; without it, the `Accept` header decides"
            " (`text/csv`), JSON otherwise.",
        ),
    ] = None,
) -> Response | SenderHealthList:
    """Each WhatsApp and SMS sender's health (`good`, `medium`, `bad`) and why: WhatsApp's
    quality rating of the number, and the failed and undelivered share of its sends of the
    last 7 days. `bad` from a RED rating or 10% failures, `medium` from YELLOW or 3%; rates
    count from 20 sends (below, 2 failures are already `bad`). A provider that cannot be
    asked leaves `quality_rating` null, says why in `rating_error`, and the receipts decide.

    `format=csv` is the way to ask for the CSV file; `Accept: text/csv` works too when
    `format` is not given."""
    senders = await read_senders(session, principal.tenant_id, box)
    # Read only: hold no transaction (on SQLite a lock) while the providers answer.
    await session.commit()
    items = await senders_health(senders, _http(request))
    if health is not None:
        items = [item for item in items if item.health == health]
    # The answer depends on `Accept` when `format` is not given: caches keep both apart.
    response.headers["Vary"] = "Accept"
    if output == "csv" or (output is None and wants_csv(request.headers.get("accept", ""))):
        return csv_response(items)
    return SenderHealthList(items=items)


def wants_csv(accept: str) -> bool:
    """Whether an `Accept` header prefers CSV to JSON: `text/csv` named with a higher
    quality than `application/json` (a tie, or a wildcard, is JSON's)."""
    qualities = _qualities(accept)
    return qualities.get(CSV_MEDIA_TYPE, 0.0) > qualities.get("application/json", 0.0)


def _qualities(accept: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        found[media.lower()] = quality
    return found


def csv_response(items: Iterable[SenderHealth]) -> Response:
    return Response(
        content=to_csv(items),
        media_type=CSV_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{CSV_FILENAME}"',
            "Vary": "Accept",
        },
    )


def to_csv(items: Iterable[SenderHealth]) -> str:
    """A header row of ``CSV_COLUMNS``, then a row per sender; reasons joined by "; "."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for item in items:
        writer.writerow({name: csv_cell(getattr(item, name)) for name in CSV_COLUMNS})
    return buffer.getvalue()


def csv_cell(value: object) -> str:
    """One cell: empty for null, a list joined by "; ", text safe from formula injection."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = "; ".join(map(str, value))
    if isinstance(value, str):
        risky = value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.match(value)
        return "'" + value if risky else value
    return str(value)


# A phone number such as +34600111222 (or -3) is a number to a spreadsheet, never a formula:
# it is left as written so that exported numbers stay readable.
_PLAIN_NUMBER = re.compile(r"^[+-][0-9]{1,20}$")
