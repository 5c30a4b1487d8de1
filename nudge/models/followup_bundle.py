"""The export file of follow-ups: a zip of definitions that another tenant can import.

Secrets travel by name only (templates say `{{ secrets.NAME }}`); their values never leave.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from nudge.errors import InvalidInput
from nudge.models.followups import (
    FollowUpDefinition,
    FollowUpPublic,
    referenced_channel,
    referenced_secrets,
)
from nudge.models.storable import json_problems

FORMAT = "nudge-followups"
FORMAT_VERSION = 1
MAX_FILES = 500
MAX_BYTES = 20 * 1024 * 1024
MAX_FILE_BYTES = 1_000_000  # one definition, uncompressed
MAX_TOTAL_BYTES = 20_000_000  # every file of the zip, uncompressed: a zip bomb stops here


class Requirements(BaseModel):
    channels: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)


def requirements(definitions: list[FollowUpDefinition]) -> Requirements:
    channels = {c for d in definitions if (c := referenced_channel(d)) is not None}
    secrets = set().union(*(referenced_secrets(d) for d in definitions)) if definitions else set()
    return Requirements(channels=sorted(channels), secrets=sorted(secrets))


def _file_name(index: int, name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "followup"
    return f"followups/{index:03d}-{slug}.json"


def write_bundle(tenant: str, definitions: list[FollowUpDefinition]) -> bytes:
    buffer = io.BytesIO()
    files = [_file_name(i, d.name) for i, d in enumerate(definitions, start=1)]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_from": tenant,
        "exported_at": datetime.now(UTC).isoformat(),
        "followups": files,
        "requires": requirements(definitions).model_dump(),
    }
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("manifest.json", json.dumps(manifest, indent=2))
        for path, definition in zip(files, definitions, strict=True):
            bundle.writestr(path, definition.model_dump_json(indent=2))
    return buffer.getvalue()


def read_bundle(data: bytes) -> list[FollowUpDefinition]:
    """The definitions of an export file; every problem is a 422 naming the file and field."""
    if len(data) > MAX_BYTES:
        raise InvalidInput.at(("body",), f"the file is larger than {MAX_BYTES // 1_000_000} MB")
    try:
        bundle = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInput.at(
            ("body",), "not a zip file made by GET /v1/followups/export"
        ) from None
    with bundle:
        _refuse_bombs(bundle)
        manifest = _json(bundle, "manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InvalidInput.at(("body", "manifest.json", "format"), f"expected {FORMAT!r}")
        files = manifest.get("followups")
        if not isinstance(files, list) or len(files) > MAX_FILES:
            raise InvalidInput.at(
                ("body", "manifest.json", "followups"), "expected a list of files"
            )
        definitions: list[FollowUpDefinition] = []
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for path in files:
            document = _json(bundle, str(path))
            # What the database could not store: the same rule as for request bodies.
            problems += json_problems(document, ("body", str(path)))
            try:
                definitions.append(FollowUpDefinition.model_validate(document))
            except ValidationError as exc:
                problems += [(("body", str(path), *e["loc"]), e["msg"]) for e in exc.errors()]
        if problems:
            raise InvalidInput(problems)
        return definitions


def _refuse_bombs(bundle: zipfile.ZipFile) -> None:
    """What the zip says it holds, checked before anything is decompressed."""
    members = bundle.infolist()
    if len(members) > MAX_FILES + 1:
        raise InvalidInput.at(("body",), f"the zip holds more than {MAX_FILES} files")
    if sum(member.file_size for member in members) > MAX_TOTAL_BYTES:
        raise InvalidInput.at(
            ("body",), f"the zip unpacks to more than {MAX_TOTAL_BYTES // 1_000_000} MB"
        )


def _read(bundle: zipfile.ZipFile, path: str) -> bytes:
    """One member, never more than ``MAX_FILE_BYTES`` of it in memory, whatever its header
    claims (a forged size does not get past the read)."""
    with bundle.open(path) as member:
        data = member.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput.at(
            ("body", path), f"unpacks to more than {MAX_FILE_BYTES // 1_000_000} MB"
        )
    return data


def _json(bundle: zipfile.ZipFile, path: str) -> Any:
    try:
        return json.loads(_read(bundle, path))
    except KeyError:
        raise InvalidInput.at(("body", path), "missing from the zip") from None
    except zipfile.BadZipFile as exc:
        raise InvalidInput.at(("body", path), f"cannot be unpacked: {exc}") from None
    except ValueError:
        raise InvalidInput.at(("body", path), "not valid JSON") from None


class LeftInactive(BaseModel):
    """An imported follow-up that was `active` where it came from and starts inactive here."""

    id: str
    name: str
    reasons: list[str] = Field(description="What must change before it may run.")


class FollowUpImportReport(BaseModel):
    """What an import created, and what the importing tenant still lacks."""

    created: list[FollowUpPublic]
    missing: Requirements = Field(
        description="Channels and secrets the imported follow-ups need and this tenant lacks; "
        "follow-ups that need them were created inactive."
    )
    secret_hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Secret name → the hosts the imported follow-ups send it to (a url whose "
        "host is a template is listed as that url). A follow-up that sends a secret to a "
        "host that this tenant's secret of that name does not list in `allowed_hosts` is "
        "created inactive.",
        examples=[{"ITSM_TOKEN": ["itsm.example.com"]}],
    )
    left_inactive: list[LeftInactive] = Field(
        default_factory=list,
        description="Follow-ups that were active in the file but were created inactive, and why.",
    )
