"""API keys: list, create and revoke the tenant's keys (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from nudge.api.deps import AdminDep, PageDep, SessionDep
from nudge.models.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from nudge.models.pages import Page
from nudge.store.tenants import api_keys_page, issue_api_key, revoke_api_key

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])

KeyId = Annotated[str, Path(max_length=32)]


@router.get("")
async def read_keys(principal: AdminDep, session: SessionDep, page: PageDep) -> Page[ApiKeyPublic]:
    """The tenant's keys that still work, oldest first (never the keys themselves)."""
    keys, next_cursor = await api_keys_page(session, principal.tenant_id, page)
    return Page[ApiKeyPublic](
        items=[ApiKeyPublic.model_validate(key, from_attributes=True) for key in keys],
        next_cursor=next_cursor,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(body: ApiKeyCreate, principal: AdminDep, session: SessionDep) -> ApiKeyCreated:
    """Create a key; the answer is the only time the key is shown."""
    row, key = await issue_api_key(session, principal.tenant_id, body.role, body.agent)
    answer = ApiKeyCreated.model_validate(
        {**ApiKeyPublic.model_validate(row, from_attributes=True).model_dump(), "api_key": key}
    )
    await session.commit()
    return answer


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(key_id: KeyId, principal: AdminDep, session: SessionDep) -> Response:
    """Revoke a key: it answers 401 from now on."""
    await revoke_api_key(session, principal.tenant_id, key_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
