"""Secrets: write-only values that templates use as `{{ secrets.NAME }}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from nudge.api.deps import AdminDep, SecretBoxDep, SessionDep
from nudge.models.directory import SecretPublic, SecretPut
from nudge.store.directory import delete_secret, list_secrets, put_secret

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])

SecretName = Annotated[
    str,
    Path(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", description="Usable as `secrets.NAME`."),
]


@router.put("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def write_secret(
    name: SecretName, body: SecretPut, principal: AdminDep, session: SessionDep, box: SecretBoxDep
) -> Response:
    """Store a secret, encrypted. It can never be read back."""
    await put_secret(session, principal.tenant_id, name, body.value.get_secret_value(), box)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("")
async def read_secret_names(principal: AdminDep, session: SessionDep) -> list[SecretPublic]:
    """The names of the tenant's secrets (never their values)."""
    return [
        SecretPublic(name=s.name, updated_at=s.updated_at)
        for s in await list_secrets(session, principal.tenant_id)
    ]


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_secret(name: SecretName, principal: AdminDep, session: SessionDep) -> Response:
    """Delete a secret."""
    await delete_secret(session, principal.tenant_id, name)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
