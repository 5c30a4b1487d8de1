"""Tenants and their API keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import Conflict, InvalidInput, NotFound
from nudge.models.tables import ApiKey, Tenant
from nudge.security import hash_api_key, new_api_key

Role = Literal["admin", "service", "agent"]
ROLES: tuple[Role, ...] = ("admin", "service", "agent")
TENANT_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant and the role of the key they used."""

    tenant_id: str
    tenant_slug: str
    role: Role


async def create_tenant(session: AsyncSession, slug: str, name: str | None = None) -> Tenant:
    if not TENANT_SLUG.match(slug):
        raise InvalidInput.at(
            ("slug",),
            "use 2-63 lowercase letters, digits and dashes, starting with a letter or digit",
        )
    if await find_tenant(session, slug) is not None:
        raise Conflict(f"tenant {slug!r} already exists")
    tenant = Tenant(slug=slug, name=name or slug)
    session.add(tenant)
    await session.flush()
    return tenant


async def find_tenant(session: AsyncSession, slug: str) -> Tenant | None:
    result = await session.execute(select(Tenant).where(Tenant.slug == slug))
    return result.scalar_one_or_none()


async def get_tenant(session: AsyncSession, slug: str) -> Tenant:
    tenant = await find_tenant(session, slug)
    if tenant is None:
        raise NotFound("tenant", slug)
    return tenant


async def create_api_key(session: AsyncSession, tenant: Tenant, role: Role) -> str:
    """Store a new key's hash and return the key itself: the only time it is seen."""
    if role not in ROLES:
        raise InvalidInput.at(("role",), f"role must be one of {', '.join(ROLES)}")
    key = new_api_key()
    session.add(ApiKey(tenant_id=tenant.id, role=role, key_hash=hash_api_key(key)))
    await session.flush()
    return key


async def create_tenant_with_key(session: AsyncSession, slug: str, name: str | None = None) -> str:
    """A new tenant and its first admin key (`nudge tenant create`); the key, seen only now."""
    tenant = await create_tenant(session, slug, name)
    return await create_api_key(session, tenant, "admin")


async def create_key(session: AsyncSession, slug: str, role: str) -> str:
    """Another key for an existing tenant (`nudge key create`); the key, seen only now."""
    tenant = await get_tenant(session, slug)
    # Typed as any string because it comes from the command line; create_api_key checks it.
    return await create_api_key(session, tenant, cast(Role, role))


async def authenticate(session: AsyncSession, key: str) -> Principal | None:
    result = await session.execute(
        select(ApiKey.role, Tenant.id, Tenant.slug)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_api_key(key))
    )
    row = result.one_or_none()
    if row is None:
        return None
    role, tenant_id, slug = row
    return Principal(tenant_id=tenant_id, tenant_slug=slug, role=cast(Role, role))


async def find_tenant_by_id(session: AsyncSession, tenant_id: str) -> Tenant | None:
    return await session.get(Tenant, tenant_id)
