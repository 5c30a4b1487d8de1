"""Secrets: write-only values that templates use as `{{ secrets.NAME }}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from nudge.api.deps import AdminDep, PageDep, SecretBoxDep, SessionDep
from nudge.models.directory import SecretPublic, SecretPut
from nudge.models.pages import Page
from nudge.store.directory import KEEP_HOSTS, delete_secret, put_secret, secrets_page

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])

SecretName = Annotated[
    str,
    Path(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", description="Usable as `secrets.NAME`."),
]


@router.put("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def write_secret(
    name: SecretName, body: SecretPut, principal: AdminDep, session: SessionDep, box: SecretBoxDep
) -> Response:
    """Store a secret, encrypted. It can never be read back. With `allowed_hosts` it is
    sent to no other host: definitions that would send it elsewhere are refused when saved,
    and a call that renders to another host fails (so narrowing the hosts holds at once)."""
    hosts = body.allowed_hosts if "allowed_hosts" in body.model_fields_set else KEEP_HOSTS
    await put_secret(session, principal.tenant_id, name, body.value.get_secret_value(), box, hosts)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("")
async def read_secret_names(
    principal: AdminDep, session: SessionDep, page: PageDep
) -> Page[SecretPublic]:
    """The names of the tenant's secrets, by name (never their values)."""
    rows, next_cursor = await secrets_page(session, principal.tenant_id, page)
    return Page[SecretPublic](
        items=[SecretPublic.model_validate(s, from_attributes=True) for s in rows],
        next_cursor=next_cursor,
    )


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_secret(name: SecretName, principal: AdminDep, session: SessionDep) -> Response:
    """Delete a secret."""
    await delete_secret(session, principal.tenant_id, name)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
