"""Tenants and their API keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, cast

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import Conflict, InvalidInput, NotFound
from nudge.models.tables import ApiKey, Tenant, utcnow
from nudge.security import hash_api_key, new_api_key
from nudge.store.pagination import PageRequest, keyset_page

Role = Literal["admin", "service", "agent"]
ROLES: tuple[Role, ...] = ("admin", "service", "agent")
TENANT_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


KEY_PREFIX_LENGTH = 10  # "nk_" and 7 characters: enough to tell keys apart, useless to guess
LAST_USE_PRECISION = timedelta(minutes=1)  # a key's last use is written at most this often


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, the key they used, and its role."""

    tenant_id: str
    tenant_slug: str
    role: Role
    key_id: str = ""
    agent: str | None = None


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


async def issue_api_key(
    session: AsyncSession, tenant_id: str, role: Role, agent: str | None = None
) -> tuple[ApiKey, str]:
    """Store a new key's hash; the row and the key itself (the only time it is seen)."""
    if role not in ROLES:
        raise InvalidInput.at(("role",), f"role must be one of {', '.join(ROLES)}")
    key = new_api_key()
    row = ApiKey(
        tenant_id=tenant_id,
        role=role,
        key_hash=hash_api_key(key),
        prefix=key[:KEY_PREFIX_LENGTH],
        agent=agent,
    )
    session.add(row)
    await session.flush()
    return row, key


async def create_api_key(session: AsyncSession, tenant: Tenant, role: Role) -> str:
    """Store a new key's hash and return the key itself: the only time it is seen."""
    _, key = await issue_api_key(session, tenant.id, role)
    return key


async def api_keys_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[ApiKey], str | None]:
    """The tenant's keys that still work, oldest first."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
    rows, next_cursor = await keyset_page(session, query, ApiKey.created_at, ApiKey.id, page)
    return [key for (key,) in rows], next_cursor


async def revoke_api_key(session: AsyncSession, tenant_id: str, key_id: str) -> ApiKey:
    """The key answers 401 from the moment the caller commits."""
    key = await session.get(ApiKey, key_id)
    if key is None or key.tenant_id != tenant_id or key.revoked_at is not None:
        raise NotFound("API key", key_id)
    key.revoked_at = utcnow()
    return key


async def revoke_key(session: AsyncSession, slug: str, key_id: str) -> ApiKey:
    """`nudge key revoke`: a tenant's key, by its id."""
    tenant = await get_tenant(session, slug)
    return await revoke_api_key(session, tenant.id, key_id)


async def note_key_use(session: AsyncSession, principal: Principal) -> None:
    """Record that the key was used now, unless that was recorded within the last minute."""
    now = utcnow()
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == principal.key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USE_PRECISION),
        )
        .values(last_used_at=now)
    )


async def create_tenant_with_key(session: AsyncSession, slug: str, name: str | None = None) -> str:
    """A new tenant and its first admin key (`nudge tenant create`); the key, seen only now."""
    tenant = await create_tenant(session, slug, name)
    return await create_api_key(session, tenant, "admin")


async def create_key(
    session: AsyncSession, slug: str, role: str, agent: str | None = None
) -> tuple[ApiKey, str]:
    """Another key for an existing tenant (`nudge key create`); the key, seen only now."""
    tenant = await get_tenant(session, slug)
    # Typed as any string because it comes from the command line; issue_api_key checks it.
    return await issue_api_key(session, tenant.id, cast(Role, role), agent)


async def authenticate(session: AsyncSession, key: str) -> tuple[Principal, bool] | None:
    """Who holds ``key``, and whether its last use is older than ``LAST_USE_PRECISION``;
    None for an unknown or revoked key."""
    result = await session.execute(
        select(ApiKey.role, Tenant.id, Tenant.slug, ApiKey.id, ApiKey.agent, ApiKey.last_used_at)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
    )
    row = result.one_or_none()
    if row is None:
        return None
    role, tenant_id, slug, key_id, agent, last_used_at = row
    principal = Principal(
        tenant_id=tenant_id, tenant_slug=slug, role=cast(Role, role), key_id=key_id, agent=agent
    )
    stale = last_used_at is None or last_used_at < utcnow() - LAST_USE_PRECISION
    return principal, stale


async def find_tenant_by_id(session: AsyncSession, tenant_id: str) -> Tenant | None:
    return await session.get(Tenant, tenant_id)
