"""Contacts, groups, channels and secrets of one tenant."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import InvalidInput, NotFound
from nudge.models.channels import ChannelPut, split_credentials
from nudge.models.directory import ContactPut
from nudge.models.phones import e164
from nudge.models.secret_hosts import SecretUse, SecretValues, host_problems, placement_problems
from nudge.models.tables import Channel, Contact, Group, GroupMember, Secret, utcnow
from nudge.models.validation import Loc
from nudge.security import SecretBox
from nudge.store.pagination import PageRequest, keyset_page


async def find_contact(session: AsyncSession, tenant_id: str, external_id: str) -> Contact | None:
    result = await session.execute(
        select(Contact).where(Contact.tenant_id == tenant_id, Contact.external_id == external_id)
    )
    return result.scalar_one_or_none()


async def find_contacts(
    session: AsyncSession, tenant_id: str, external_ids: list[str]
) -> dict[str, Contact]:
    """The tenant's contacts among ``external_ids``, by external id (those that exist)."""
    result = await session.execute(
        select(Contact).where(Contact.tenant_id == tenant_id, Contact.external_id.in_(external_ids))
    )
    return {contact.external_id: contact for contact in result.scalars()}


async def get_contact(session: AsyncSession, tenant_id: str, external_id: str) -> Contact:
    contact = await find_contact(session, tenant_id, external_id)
    if contact is None:
        raise NotFound("contact", external_id)
    return contact


async def put_contact(
    session: AsyncSession, tenant_id: str, external_id: str, data: ContactPut
) -> Contact:
    contact = await find_contact(session, tenant_id, external_id)
    if contact is None:
        contact = Contact(tenant_id=tenant_id, external_id=external_id)
        session.add(contact)
    for field, value in data.model_dump().items():
        setattr(contact, field, value)
    contact.updated_at = utcnow()
    await session.flush()
    return contact


async def put_group(
    session: AsyncSession, tenant_id: str, name: str, members: Sequence[str]
) -> tuple[Group, list[str]]:
    """Make the group exactly ``members``; an unknown member is a 422 naming its position."""
    result = await session.execute(
        select(Contact.external_id, Contact.id).where(
            Contact.tenant_id == tenant_id, Contact.external_id.in_(set(members))
        )
    )
    ids = {external_id: contact_id for external_id, contact_id in result}
    unknown = [
        (("body", "members", i), f"no contact with external id {m!r}")
        for i, m in enumerate(members)
        if m not in ids
    ]
    if unknown:
        raise InvalidInput(unknown)
    group = (
        await session.execute(select(Group).where(Group.tenant_id == tenant_id, Group.name == name))
    ).scalar_one_or_none()
    if group is None:
        group = Group(tenant_id=tenant_id, name=name)
        session.add(group)
        await session.flush()
    else:
        group.updated_at = utcnow()
        await session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    unique = list(dict.fromkeys(members))
    session.add_all(GroupMember(group_id=group.id, contact_id=ids[m]) for m in unique)
    await session.flush()
    return group, unique


async def get_group(session: AsyncSession, tenant_id: str, name: str) -> tuple[Group, list[str]]:
    group = (
        await session.execute(select(Group).where(Group.tenant_id == tenant_id, Group.name == name))
    ).scalar_one_or_none()
    if group is None:
        raise NotFound("group", name)
    return group, await group_member_ids(session, group.id)


async def group_member_ids(session: AsyncSession, group_id: str) -> list[str]:
    result = await session.execute(
        select(Contact.external_id)
        .join(GroupMember, GroupMember.contact_id == Contact.id)
        .where(GroupMember.group_id == group_id)
        .order_by(Contact.external_id)
    )
    return list(result.scalars())


async def put_channel(
    session: AsyncSession, tenant_id: str, slug: str, data: ChannelPut, box: SecretBox
) -> Channel:
    config, credentials = split_credentials(data)
    await _check_fallback(session, tenant_id, slug, data.fallback)
    channel = await find_channel(session, tenant_id, slug)
    if channel is None:
        channel = Channel(tenant_id=tenant_id, slug=slug)
        session.add(channel)
    channel.type = data.type
    channel.config = config
    channel.sealed_credentials = box.seal(json.dumps(credentials)) if credentials else None
    channel.fallback = list(data.fallback) or None
    channel.fallback_after_minutes = data.fallback_after_minutes
    channel.updated_at = utcnow()
    await session.flush()
    return channel


async def _check_fallback(
    session: AsyncSession, tenant_id: str, slug: str, fallback: Sequence[str]
) -> None:
    """Every fallback channel is another channel of the tenant (a 422 names the entry)."""
    found = set(
        (
            await session.execute(
                select(Channel.slug).where(
                    Channel.tenant_id == tenant_id, Channel.slug.in_(list(fallback))
                )
            )
        ).scalars()
    )
    problems: list[tuple[Loc, str]] = []
    for i, name in enumerate(fallback):
        if name == slug:
            problems.append((("body", "fallback", i), "a channel cannot fall back on itself"))
        elif name not in found:
            problems.append((("body", "fallback", i), f"no channel {name!r}"))
    if problems:
        raise InvalidInput(problems)


async def find_channel(session: AsyncSession, tenant_id: str, slug: str) -> Channel | None:
    result = await session.execute(
        select(Channel).where(Channel.tenant_id == tenant_id, Channel.slug == slug)
    )
    return result.scalar_one_or_none()


async def get_channel(session: AsyncSession, tenant_id: str, slug: str) -> Channel:
    channel = await find_channel(session, tenant_id, slug)
    if channel is None:
        raise NotFound("channel", slug)
    return channel


async def channels_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[Channel], str | None]:
    """The tenant's channels, by slug."""
    query = select(Channel).where(Channel.tenant_id == tenant_id)
    rows, next_cursor = await keyset_page(session, query, Channel.slug, Channel.id, page)
    return [channel for (channel,) in rows], next_cursor


def channel_credentials(channel: Channel, box: SecretBox) -> dict[str, str]:
    if channel.sealed_credentials is None:
        return {}
    credentials: dict[str, str] = json.loads(box.open(channel.sealed_credentials))
    return credentials


class _KeepHosts:
    def __repr__(self) -> str:
        return "KEEP_HOSTS"


KEEP_HOSTS: Final = _KeepHosts()
"""``put_secret``'s ``allowed_hosts`` when the request leaves them out: they stay as they are."""


async def put_secret(
    session: AsyncSession,
    tenant_id: str,
    name: str,
    value: str,
    box: SecretBox,
    allowed_hosts: list[str] | _KeepHosts | None = KEEP_HOSTS,
) -> Secret:
    """Store a secret's value, and the hosts it may go to (None: any; ``KEEP_HOSTS``: those
    it has, none for a new secret)."""
    secret = (
        await session.execute(
            select(Secret).where(Secret.tenant_id == tenant_id, Secret.name == name)
        )
    ).scalar_one_or_none()
    if secret is None:
        secret = Secret(tenant_id=tenant_id, name=name)
        session.add(secret)
    if not isinstance(allowed_hosts, _KeepHosts):
        secret.allowed_hosts = allowed_hosts
    secret.sealed_value = box.seal(value)
    secret.updated_at = utcnow()
    await session.flush()
    return secret


async def list_secrets(session: AsyncSession, tenant_id: str) -> list[Secret]:
    result = await session.execute(
        select(Secret).where(Secret.tenant_id == tenant_id).order_by(Secret.name)
    )
    return list(result.scalars())


async def secrets_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[Secret], str | None]:
    """The tenant's secrets, by name."""
    query = select(Secret).where(Secret.tenant_id == tenant_id)
    rows, next_cursor = await keyset_page(session, query, Secret.name, Secret.id, page)
    return [secret for (secret,) in rows], next_cursor


async def delete_secret(session: AsyncSession, tenant_id: str, name: str) -> None:
    result = await session.execute(
        delete(Secret).where(Secret.tenant_id == tenant_id, Secret.name == name)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound("secret", name)


async def secret_values(session: AsyncSession, tenant_id: str, box: SecretBox) -> SecretValues:
    """Every secret of the tenant in plain text, for rendering templates inside an activity,
    with the hosts of the restricted ones (``call_integration`` holds them to those)."""
    secrets = await list_secrets(session, tenant_id)
    return SecretValues(
        {s.name: box.open(s.sealed_value) for s in secrets},
        {s.name: s.allowed_hosts for s in secrets if s.allowed_hosts is not None},
    )


async def secret_hosts(session: AsyncSession, tenant_id: str) -> dict[str, list[str] | None]:
    """Every secret name of the tenant → its allowed hosts (None: any host)."""
    rows = await session.execute(
        select(Secret.name, Secret.allowed_hosts).where(Secret.tenant_id == tenant_id)
    )
    return {str(name): (list(hosts) if hosts is not None else None) for name, hosts in rows}


async def ensure_log_channels(session: AsyncSession, tenant_id: str, slugs: Sequence[str]) -> None:
    """Create a `log` channel for each of ``slugs`` the tenant does not have yet."""
    existing = set(
        (
            await session.execute(
                select(Channel.slug).where(Channel.tenant_id == tenant_id, Channel.slug.in_(slugs))
            )
        ).scalars()
    )
    for slug in slugs:
        if slug not in existing:
            session.add(Channel(tenant_id=tenant_id, slug=slug, type="log", config={}))
    await session.flush()


async def find_contact_by(
    session: AsyncSession, tenant_id: str, field: str, value: object
) -> Contact | None:
    """A contact of the tenant whose ``field`` (``external_id``, ``email``, ``phone``) is
    ``value``; None when there is none."""
    column = getattr(Contact, field)
    if field == "phone" and isinstance(value, str):
        # Stored as E.164; an ITSM may write the same number with spaces or a 00 prefix.
        with contextlib.suppress(ValueError):
            value = e164(value)
    result = await session.execute(
        select(Contact).where(Contact.tenant_id == tenant_id, column == value).limit(1)
    )
    return result.scalar_one_or_none()


async def members_of_group_named(session: AsyncSession, tenant_id: str, name: str) -> list[Contact]:
    """The contacts in the tenant's group ``name``, by external id; none for an unknown group."""
    result = await session.execute(
        select(Contact)
        .join(GroupMember, GroupMember.contact_id == Contact.id)
        .join(Group, Group.id == GroupMember.group_id)
        .where(Group.tenant_id == tenant_id, Group.name == name)
        .order_by(Contact.external_id)
    )
    return list(result.scalars())


async def external_id_of(session: AsyncSession, contact_id: str) -> str:
    """The id a contact has in the tenant's systems, from the row id tables refer to."""
    contact = await session.get_one(Contact, contact_id)
    return contact.external_id


async def reseal_everything(session: AsyncSession, box: SecretBox) -> int:
    """Encrypt every secret and channel credential of every tenant with the newest key
    (`nudge secrets rotate`); the number of values resealed."""
    count = 0
    for secret in (await session.execute(select(Secret))).scalars():
        secret.sealed_value = box.reseal(secret.sealed_value)
        count += 1
    channels = await session.execute(select(Channel).where(Channel.sealed_credentials.is_not(None)))
    for channel in channels.scalars():
        assert channel.sealed_credentials is not None
        channel.sealed_credentials = box.reseal(channel.sealed_credentials)
        count += 1
    await session.flush()
    return count


async def secret_problems(
    session: AsyncSession,
    tenant_id: str,
    references: Iterable[tuple[Loc, str]],
    uses: Sequence[SecretUse],
) -> list[tuple[Loc, str]]:
    """What a definition gets wrong about the tenant's secrets: ones that do not exist, ones
    read where secrets may not go, and ones sent to a host their ``allowed_hosts`` leave out."""
    hosts = await secret_hosts(session, tenant_id)
    problems = [
        (loc, f"no secret {name!r}; create it with PUT /v1/secrets/{name}")
        for loc, name in references
        if name not in hosts
    ]
    return problems + placement_problems(uses) + host_problems(uses, hosts)


async def find_contact_by_phone(
    session: AsyncSession, tenant_id: str, phone: str, whatsapp_id: str | None = None
) -> Contact | None:
    """The contact a provider's message comes from: by WhatsApp id first (it may differ
    from the phone), then by phone; the oldest when several share a number."""
    conditions = [Contact.phone == phone]
    if whatsapp_id is not None:
        conditions.insert(0, Contact.whatsapp_id == whatsapp_id)
    for condition in conditions:
        found = await session.execute(
            select(Contact)
            .where(Contact.tenant_id == tenant_id, condition)
            .order_by(Contact.created_at, Contact.id)
            .limit(1)
        )
        contact = found.scalar_one_or_none()
        if contact is not None:
            return contact
    return None


async def add_contact_for_phone(
    session: AsyncSession, tenant_id: str, phone: str, name: str | None
) -> Contact:
    """A contact for a number nobody in the directory has: its external id is the number."""
    contact = Contact(tenant_id=tenant_id, external_id=phone, phone=phone, name=name)
    session.add(contact)
    await session.flush()
    return contact
