"""Secret keys that rotate, and button tokens that expire and belong to one round of reminders."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.models.db import create_engine, session_factory, transaction
from nudge.models.tables import FollowUp, FollowUpRecord
from nudge.security import ActionTokens, SecretBox
from nudge.settings import Settings
from nudge.store.directory import list_secrets, put_secret
from nudge.store.tenants import get_tenant
from tests.conftest import TenantKeys
from tests.test_cli import nudge


def test_a_rotated_key_still_opens_old_secrets_and_reseals_them_with_the_new_one() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_with_old = SecretBox(old).seal("itsm-token")
    rotated = SecretBox(f"{new},{old}")
    assert rotated.open(sealed_with_old) == "itsm-token"
    resealed = rotated.reseal(sealed_with_old)
    assert SecretBox(new).open(resealed) == "itsm-token"  # the old key is no longer needed
    assert SecretBox(new).seal("x") != SecretBox(new).seal("x")  # fresh nonce every time


def test_button_tokens_expire_verify_across_a_rotation_and_refuse_tampering() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    claims = {"t": "tenant", "f": "f1", "r": "INC1", "a": "approve", "c": "ada", "g": "1"}
    token = ActionTokens(old).issue(claims)
    after_rotation = ActionTokens(f"{new},{old}")
    verified = after_rotation.verify(token)
    assert verified is not None and {k: verified[k] for k in claims} == claims
    assert not after_rotation.expired(verified)
    assert after_rotation.expired(verified, now=time.time() + 31 * 24 * 3600)
    assert ActionTokens(new).verify(token) is None  # signed with a key it does not have
    body, signature = token.split(".")
    assert after_rotation.verify(body[:-2] + "xx." + signature) is None
    # The signing key is derived for tokens only: the raw secret key does not sign them.
    assert ActionTokens(old).verify(token) is not None
    assert SecretBox(old).seal("x") != token


async def _record(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys, generation: int
) -> FollowUpRecord:
    async with transaction(sessions) as session:
        followup = FollowUp(tenant_id=tenant.id, name="approvals", status="active")
        session.add(followup)
        await session.flush()
        record = FollowUpRecord(
            tenant_id=tenant.id,
            followup_id=followup.id,
            reconciliation_id="INC1",
            version=1,
            generation=generation,
        )
        session.add(record)
    return record


async def test_an_expired_or_earlier_rounds_button_is_refused(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    record = await _record(sessions, tenant, generation=2)
    claims = {"t": tenant.id, "f": record.followup_id, "r": "INC1", "a": "approve", "c": "ada"}
    expired = ActionTokens(settings.secret_key_value(), ttl=-timedelta(seconds=60)).issue(
        {**claims, "g": "2"}
    )
    answer = await api.post(f"/v1/actions/{expired}")
    assert answer.status_code == 409 and "expired" in answer.text

    earlier = ActionTokens(settings.secret_key_value()).issue({**claims, "g": "1"})
    answer = await api.post(f"/v1/actions/{earlier}")
    assert answer.status_code == 409 and "earlier round" in answer.text

    forged = ActionTokens(Fernet.generate_key().decode()).issue({**claims, "g": "2"})
    assert (await api.post(f"/v1/actions/{forged}")).status_code == 404
    body = forged.split(".")[0]
    assert (await api.post(f"/v1/actions/{body}.é")).status_code == 404  # not a 500


def test_nudge_secrets_rotate_reseals_every_secret_with_the_newest_key(tmp_path: Path) -> None:
    database = f"sqlite+pysqlite:///{tmp_path / 'rotate.sqlite3'}"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {"NUDGE_DATABASE_URL": database, "NUDGE_DATA_DIR": str(tmp_path)}
    assert nudge("migrate", env=env).returncode == 0
    assert nudge("tenant", "create", "acme", env=env).returncode == 0

    async def store_secret() -> None:
        engine = create_engine(database)
        try:
            async with transaction(session_factory(engine)) as session:
                tenant = await get_tenant(session, "acme")
                await put_secret(session, tenant.id, "ITSM", "token-1", SecretBox(old))
        finally:
            await engine.dispose()

    async def stored_value() -> str:
        engine = create_engine(database)
        try:
            async with session_factory(engine)() as session:
                tenant = await get_tenant(session, "acme")
                return (await list_secrets(session, tenant.id))[0].sealed_value
        finally:
            await engine.dispose()

    asyncio.run(store_secret())
    rotated = nudge("secrets", "rotate", env={**env, "NUDGE_SECRET_KEY": f"{new},{old}"})
    assert rotated.returncode == 0, rotated.stderr
    assert "1 secrets" in rotated.stdout
    assert SecretBox(new).open(asyncio.run(stored_value())) == "token-1"

    wrong = nudge("secrets", "rotate", env={**env, "NUDGE_SECRET_KEY": old})
    assert wrong.returncode == 2 and "cannot be decrypted" in wrong.stderr
    assert "Traceback" not in wrong.stderr
