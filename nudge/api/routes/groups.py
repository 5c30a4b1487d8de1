"""Groups of contacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from nudge.api.deps import AdminDep, SessionDep
from nudge.models.directory import GroupPublic, GroupPut
from nudge.store.directory import get_group, put_group

router = APIRouter(prefix="/v1/groups", tags=["groups"])

GroupName = Annotated[str, Path(min_length=1, max_length=200)]


@router.put("/{name}")
async def upsert_group(
    name: GroupName, body: GroupPut, principal: AdminDep, session: SessionDep
) -> GroupPublic:
    """Create a group or replace its members."""
    group, members = await put_group(session, principal.tenant_id, name, body.members)
    await session.commit()
    return GroupPublic(name=group.name, members=sorted(members), updated_at=group.updated_at)


@router.get("/{name}")
async def read_group(name: GroupName, principal: AdminDep, session: SessionDep) -> GroupPublic:
    """A group and its members."""
    group, members = await get_group(session, principal.tenant_id, name)
    return GroupPublic(name=group.name, members=members, updated_at=group.updated_at)
