"""Transactions mean what the code assumes: on SQLite a transaction begins immediately (its
reads are part of it, writers that read first take turns instead of failing with "database
is locked"), savepoints undo only their part (on both databases), readers never wait for a
writer, and a request never waits for itself."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.models.db import (
    MachineTurn,
    SessionsBeside,
    create_engine,
    read_only,
    session_factory,
    transaction,
)
from nudge.models.tables import ApiKey, Tenant
from nudge.settings import Settings
from tests.conftest import TenantKeys, api_client
from tests.utils.journeys import create, journey
from tests.utils.waiting import eventually

ON_POSTGRES = bool(os.environ.get("NUDGE_TEST_DATABASE_URL", "").startswith("postgres"))
sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="SQLite's locking; PostgreSQL has rows")

WRITERS = 50
INCREMENTS = 10  # per writer coroutine

# Another process on the same file, through the same engine: increments the counter until
# its standard input closes, then prints how many times it did.
OTHER_PROCESS = """
import asyncio, sys, threading
from nudge.models.db import create_engine, session_factory
from tests.test_sqlite_transactions import increment

async def main(url: str) -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    engine = create_engine(url)
    sessions = session_factory(engine)
    done = 0
    while not stop.is_set():
        await increment(sessions)
        done += 1
        if done == 1:
            print("ready", flush=True)
    await engine.dispose()
    print(done, flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def started(script: str, url: str) -> asyncio.subprocess.Process:
    """``script`` running on the file ``url`` in another process, once it says "ready"; it
    goes on until its standard input is closed."""
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert other.stdout is not None
    try:
        assert (await asyncio.wait_for(other.stdout.readline(), 60)).strip() == b"ready"
    except BaseException:
        other.kill()
        await other.wait()
        raise
    return other


async def increment(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Read the counter, then write it one higher, in one transaction; the value written."""
    async with transaction(sessions) as session:
        value = (await session.execute(text("SELECT value FROM counter"))).scalar_one()
        await session.execute(text("UPDATE counter SET value = :v"), {"v": value + 1})
    return int(value) + 1


async def counter(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int((await session.execute(text("SELECT value FROM counter"))).scalar_one())


@pytest.fixture
async def own_file(tmp_path: Path) -> AsyncIterator[tuple[str, async_sessionmaker[AsyncSession]]]:
    """A SQLite file of the test's own with a counter at 0, and the app's sessions on it."""
    url = f"sqlite:///{tmp_path / 'counter.sqlite3'}"
    engine = create_engine(url)
    sessions = session_factory(engine)
    async with transaction(sessions) as session:
        await session.execute(text("CREATE TABLE counter (value INTEGER NOT NULL)"))
        await session.execute(text("INSERT INTO counter VALUES (0)"))
    yield url, sessions
    await engine.dispose()


@sqlite_only
async def test_fifty_writers_and_another_process_take_turns_without_a_lock_error(
    own_file: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    url, sessions = own_file
    # The other process writes from before the first coroutine until after the last.
    other = await started(OTHER_PROCESS, url)
    assert other.stdin is not None
    try:

        async def writer() -> None:
            for _ in range(INCREMENTS):
                await increment(sessions)

        # Any "database is locked" (OperationalError) fails the gather, and so the test.
        await asyncio.wait_for(asyncio.gather(*(writer() for _ in range(WRITERS))), 120)
    finally:
        other.stdin.close()
        out, _ = await asyncio.wait_for(other.communicate(), 60)
    assert other.returncode == 0
    by_the_other = int(out.split()[-1])
    assert by_the_other > 0
    # No increment was lost: every read was part of its write's transaction.
    assert await counter(sessions) == WRITERS * INCREMENTS + by_the_other


@sqlite_only
async def test_two_transactions_that_read_then_write_take_turns(
    own_file: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    _, sessions = own_file
    second_read = asyncio.Event()
    seen_by_second: list[int] = []

    async def second() -> None:
        async with transaction(sessions) as session:
            value = (await session.execute(text("SELECT value FROM counter"))).scalar_one()
            seen_by_second.append(value)
            second_read.set()
            await session.execute(text("UPDATE counter SET value = :v"), {"v": value + 1})

    async with transaction(sessions) as session:
        value = (await session.execute(text("SELECT value FROM counter"))).scalar_one()
        other = asyncio.create_task(second())
        # Give the second one every chance to read before this one writes; with transactions
        # that begin immediately it cannot: it waits at BEGIN until this one commits.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(second_read.wait(), 1)
        await session.execute(text("UPDATE counter SET value = :v"), {"v": value + 1})
    # Deferred transactions: the second one's write fails with "database is locked"
    # (SQLITE_BUSY, which busy_timeout does not wait out); the driver's legacy mode: it
    # read outside any transaction, and one increment is lost.
    await asyncio.wait_for(other, 30)
    assert seen_by_second == [1]
    assert await counter(sessions) == 2


@sqlite_only
async def test_readers_do_not_wait_for_a_writer_and_cannot_write(
    own_file: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    _, sessions = own_file
    async with transaction(sessions) as writing:
        await writing.execute(text("UPDATE counter SET value = 5"))
        # The write lock is held until this block ends; a reader sees the committed value.
        assert await asyncio.wait_for(counter(read_only(sessions)), 5) == 0
    assert await counter(read_only(sessions)) == 5
    async with read_only(sessions)() as reading:
        with pytest.raises(Exception, match="readonly database"):
            await reading.execute(text("UPDATE counter SET value = 6"))
    # The connection goes back to the pool writable again.
    assert await increment(sessions) == 6


async def test_a_savepoint_undoes_only_its_part_and_belongs_to_its_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    def slug(name: str) -> str:
        return f"sp-{name}-{uuid.uuid4().hex[:8]}"

    kept, undone, duplicate, later = slug("kept"), slug("undone"), slug("dup"), slug("later")

    class Undo(Exception):
        pass

    async with transaction(sessions) as session:
        session.add(Tenant(slug=kept, name=kept))
        await session.flush()
        with pytest.raises(Undo):
            async with session.begin_nested():
                session.add(Tenant(slug=undone, name=undone))
                await session.flush()
                raise Undo
        # A unique violation inside a savepoint (as `create_enrollment` meets one) leaves the
        # rest of the transaction usable.
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                session.add(Tenant(slug=kept, name=duplicate))
        session.add(Tenant(slug=later, name=later))

    # A savepoint after reads only, released, then its transaction rolled back: nothing of
    # it stays (in the driver's legacy mode the savepoint began a transaction of its own,
    # committed when released).
    alone = slug("alone")
    with pytest.raises(Undo):
        async with transaction(sessions) as session:
            await session.execute(select(Tenant.id).limit(1))
            async with session.begin_nested():
                session.add(Tenant(slug=alone, name=alone))
            raise Undo

    async with sessions() as session:
        found = set(
            await session.scalars(
                select(Tenant.slug).where(Tenant.slug.in_([kept, undone, later, alone]))
            )
        )
        names = set(await session.scalars(select(Tenant.name).where(Tenant.slug == kept)))
    assert found == {kept, later}
    assert names == {kept}


@sqlite_only
async def test_a_request_session_holding_writes_is_refused_at_once_not_deadlocked(
    own_file: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    _, sessions = own_file
    async with sessions() as request_session:
        beside = SessionsBeside(sessions, request_session)
        await request_session.execute(text("SELECT value FROM counter"))
        # Only read: its transaction is ended, and the transaction beside it goes ahead.
        assert await asyncio.wait_for(increment(beside), 5) == 1
        assert not request_session.in_transaction()
        request_session.add(Tenant(slug="never-written", name="x"))
        with pytest.raises(RuntimeError, match="uncommitted writes"):
            await asyncio.wait_for(increment(beside), 5)


@sqlite_only
async def test_a_task_that_would_wait_for_itself_is_refused_at_once(
    own_file: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    """A second write transaction begun while the same task holds one open would wait for
    it for busy_timeout, and fail with "database is locked"; it is refused at once."""
    _, sessions = own_file
    async with transaction(sessions) as first:
        await first.execute(text("UPDATE counter SET value = 1"))
        # In this task (asyncio.timeout, not wait_for, which would run it in another one).
        with pytest.raises(RuntimeError, match="would wait for itself"):
            async with asyncio.timeout(5):
                await increment(sessions)
    # Both ended: the first committed, and the turn is free again.
    assert await asyncio.wait_for(increment(sessions), 5) == 2


# Another process as busy as the API in a burst: writers queued in it, so each transaction
# begins as the one before commits, until its stdin closes.
BUSY_PROCESS = """
import asyncio, sys, threading
from sqlalchemy import text
from nudge.models.db import create_engine, session_factory, transaction

async def main(url: str) -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    engine = create_engine(url)
    sessions = session_factory(engine)

    async def writer() -> None:
        while not stop.is_set():
            async with transaction(sessions) as session:
                for _ in range(5):
                    await session.execute(text("SELECT count(*) FROM turns"))
                await session.execute(text("INSERT INTO turns (who) VALUES ('other')"))

    writers = [asyncio.create_task(writer()) for _ in range(8)]
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.gather(*writers)
    await engine.dispose()

asyncio.run(main(sys.argv[1]))
"""
OUR_WRITES = 30


@sqlite_only
async def test_a_process_writing_back_to_back_lets_another_take_turns(
    own_file: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    """SQLite's busy handler polls, so a process that commits and begins again at once
    nearly always wins the lock; the turns file makes the two processes alternate."""
    url, sessions = own_file
    async with transaction(sessions) as session:
        await session.execute(text("CREATE TABLE turns (who TEXT NOT NULL)"))
    other = await started(BUSY_PROCESS, url)
    assert other.stdin is not None
    try:
        for _ in range(OUR_WRITES):
            async with transaction(sessions) as session:
                await session.execute(text("INSERT INTO turns (who) VALUES ('us')"))
    finally:
        other.stdin.close()
        await asyncio.wait_for(other.communicate(), 60)
    async with sessions() as session:
        order = [who for (who,) in await session.execute(text("SELECT who FROM turns"))]
    ours = [i for i, who in enumerate(order) if who == "us"]
    # Their writes between two of ours: one when the processes alternate. Polled, ours came
    # back to back most of the time, and at times hundreds of theirs did.
    between = [b - a - 1 for a, b in itertools.pairwise(ours)]
    alternated = sum(1 for count in between if count == 1)
    assert alternated >= len(between) * 4 // 5, between


@sqlite_only
async def test_the_turns_file_is_held_for_exactly_a_write_transaction(
    own_file: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    url, sessions = own_file
    turns = Path(url.removeprefix("sqlite:///") + ".turns")
    assert turns.exists() and free(turns)
    async with transaction(sessions) as session:
        await session.execute(text("UPDATE counter SET value = 1"))
        assert not free(turns)
    assert free(turns)
    async with read_only(sessions)() as session:
        await session.execute(text("SELECT value FROM counter"))
        assert free(turns)  # readers take no turn
    with contextlib.suppress(RuntimeError):
        async with transaction(sessions) as session:
            await session.execute(text("UPDATE counter SET value = 2"))
            raise RuntimeError("rolled back")
    assert free(turns)


def free(lock_file: Path) -> bool:
    """Whether nobody holds ``lock_file``'s lock (asked without waiting)."""
    probe = os.open(lock_file, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(probe)
    return True


@sqlite_only
async def test_a_turn_given_up_while_waiting_lets_go_once_it_comes(tmp_path: Path) -> None:
    """A request cancelled while it waits for the turns file does not keep the lock."""
    first, second = MachineTurn(tmp_path / "turns"), MachineTurn(tmp_path / "turns")
    held = await first.take()
    waiting = asyncio.create_task(second.take())
    # It waits in its thread, holding the queue's lock, for the turn the first one has.
    await eventually(lambda: not free(tmp_path / "turns-queue"), message="the second waits")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    MachineTurn.give_back(held)
    # The abandoned wait gets the lock and lets go of it at once: a third one gets it.
    third = await asyncio.wait_for(MachineTurn(tmp_path / "turns").take(), 10)
    MachineTurn.give_back(third)


@sqlite_only
async def test_fifty_concurrent_api_writers_with_fresh_keys_answer_no_5xx(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    own_time_env: WorkflowEnvironment,
    make_tenant: Callable[[], Awaitable[TenantKeys]],
) -> None:
    """Each request checks its key (and, the key being new, records its use in a transaction
    of its own) and writes: contacts, and enrollments that read the journey with the request's
    session, then commit the enrollment in one of their own before starting its run."""
    tenants = [await make_tenant() for _ in range(5)]
    async with api_client(settings, sessions, own_time_env.client) as api:
        for t in tenants:  # the channel the journey sends on (no worker runs it here)
            body = {"type": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}}
            answer = await api.put("/v1/channels/hook", json=body, headers=t.headers())
            assert answer.status_code == 200, answer.text
        journeys = [await create(api, t, journey(f"Welcome {t.slug}")) for t in tenants]

        async def contact_then_enrollment(n: int) -> list[int]:
            tenant, welcome = tenants[n % len(tenants)], journeys[n % len(tenants)]
            put = await api.put(
                f"/v1/contacts/c{n}", json={"name": f"C {n}"}, headers=tenant.headers("service")
            )
            enrolled = await api.post(
                f"/v1/journeys/{welcome['id']}/enrollments",
                json={"contact_id": f"c{n}", "variables": {}},
                headers=tenant.headers("service"),
            )
            return [put.status_code, enrolled.status_code]

        answers = await asyncio.wait_for(
            asyncio.gather(*(contact_then_enrollment(n) for n in range(WRITERS))), 120
        )
    assert answers == [[200, 201]] * WRITERS
    async with sessions() as session:
        used = await session.scalars(
            select(ApiKey.last_used_at).where(
                ApiKey.tenant_id.in_([t.id for t in tenants]), ApiKey.role == "service"
            )
        )
        assert all(at is not None for at in used)
