"""Engines, sessions and migrations for SQLite (development) and PostgreSQL (production).

On SQLite every transaction of a session begins with ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe
for the sqlite3 and aiosqlite drivers: the driver's own transaction handling is switched off
and the ``begin`` event emits BEGIN). So a transaction holds the database's one write lock
from its first statement to its commit: its reads are part of it, a savepoint is part of it,
and two transactions that read, then write, take turns instead of one of them failing with
"database is locked" (SQLITE_BUSY on the upgrade to a writer, which ``busy_timeout`` does not
wait out). Write transactions queue for their turn (``WriteTurns``): within a process
first come first served, and between the processes of one machine (the API and the worker
of `nudge dev`) through lock files beside the database, queued so that the process
already waiting goes first (``MachineTurn``); SQLite's own lock is polled, and there a busy
process starves the other. The price: a process
that keeps a transaction open while another of its sessions writes waits for itself (in the
same task that is refused at once). Sessions that only read use ``read_only(sessions)``; a
request's sessions of their own come from ``SessionsBeside``, which ends the request
session's reading first. PostgreSQL is left as it is.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.util import await_

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The execution option that makes a SQLite transaction a reader: BEGIN DEFERRED and the
# connection `query_only` (see `read_only`).
READ_ONLY = "nudge_read_only"
_QUERY_ONLY = "nudge_query_only"  # in a connection's info: whether `query_only` is on
_WROTE = "nudge_wrote"  # in a session's info: its transaction has written something
_TURN = "nudge_write_turn"  # in a connection's info: the process's write turn it holds
_MACHINE_TURN = "nudge_machine_turn"  # in a connection's info: the lock file's descriptor
# How long a write transaction waits for the process's other ones before it gives up, and
# again for other processes' (the turns file); busy_timeout covers SQLite's lock on top.
TURN_TIMEOUT_SECONDS = 60.0


def _driver_url(url: str, *, asynchronous: bool) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite+pysqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not begin transactions itself: its "legacy transaction control" runs
    # SELECTs and SAVEPOINTs outside any transaction and begins deferred. `_begin_sqlite` does.
    dbapi_connection.isolation_level = None
    # The API and the worker are separate processes writing one file: WAL lets readers
    # go on during a write, and busy_timeout makes a writer wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # In WAL mode NORMAL syncs at checkpoints, not at every commit (SQLite's advice for WAL):
    # a commit survives a crash of the process, and only a power loss may undo the last few.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@dataclass
class _Turn:
    lock: asyncio.Lock
    holder: asyncio.Task[Any] | None = None


class MachineTurn:
    """The turn between processes: an exclusive ``flock`` on a file beside the database.

    SQLite's busy handler polls with sleeps of up to 100 ms, and a process that commits and
    begins again at once (the API under a burst of events) finds the lock free nearly every
    time, while the other (the worker ending enrollments) nearly never does. Here a process
    waits for the turn holding a second lock, the queue's, and lets go of it once it has the
    turn: a process that gave the turn back and wants it again waits for the queue, so the
    one already waiting goes first, and the processes alternate. Each wait opens its own
    descriptors, so one given up (a timeout, a cancelled request) lets go when it ends."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._queue = path.with_name(path.name + "-queue")

    async def take(self) -> int:
        """The descriptor holding the turn, to pass to ``give_back``."""
        waiting = asyncio.get_running_loop().run_in_executor(None, self._wait)
        try:
            return await asyncio.shield(waiting)
        except BaseException:
            waiting.add_done_callback(_close_if_taken)
            raise

    def _wait(self) -> int:
        queue = _locked(self._queue)
        try:
            return _locked(self._path)
        finally:
            os.close(queue)

    @staticmethod
    def give_back(fd: int) -> None:
        os.close(fd)  # closing the only descriptor of its lock lets go of it


def _locked(path: Path) -> int:
    """A new descriptor of ``path`` holding its exclusive lock, once it has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _close_if_taken(waited: asyncio.Future[int]) -> None:
    if not waited.cancelled() and waited.exception() is None:
        os.close(waited.result())


class WriteTurns:
    """One SQLite file's write transactions, one at a time: first come first served in the
    process, and in turn with other processes (``MachineTurn``) when the database is a file.
    SQLite's lock serializes them anyway, but its waiters poll (busy_timeout, with sleeps of
    up to 100 ms), so under load a writer can lose the race for 10 s on end and fail with
    "database is locked" while later ones go ahead. Here they queue, and only the head of
    the queue waits for the writers of other processes. A task that asks for a turn while it
    holds one would wait for itself: refused at once."""

    def __init__(self, machine: MachineTurn | None = None) -> None:
        self._turns: WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = WeakKeyDictionary()
        self._machine = machine

    def take(self, info: dict[Any, Any]) -> None:
        """Wait for this process's turn. Called in the `begin` event, which runs inside the
        greenlet of an async call: it can await, as the driver's adapter does."""
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = _Turn(asyncio.Lock())
        task = asyncio.current_task()
        if task is not None and turn.holder is task:
            raise RuntimeError(
                "a write transaction began while this task holds another one open on the same"
                " SQLite database: it would wait for itself; end the first one before"
            )
        try:
            await_(asyncio.wait_for(turn.lock.acquire(), TURN_TIMEOUT_SECONDS))
        except TimeoutError:
            raise RuntimeError(
                f"no write turn on the SQLite database within {TURN_TIMEOUT_SECONDS:.0f} s:"
                " a transaction of this process keeps it (one left open while awaiting"
                " something else?)"
            ) from None
        if self._machine is not None:
            try:
                info[_MACHINE_TURN] = await_(
                    asyncio.wait_for(self._machine.take(), TURN_TIMEOUT_SECONDS)
                )
            except BaseException as exc:
                turn.lock.release()
                if isinstance(exc, TimeoutError):
                    raise RuntimeError(
                        f"no write turn on the SQLite database within"
                        f" {TURN_TIMEOUT_SECONDS:.0f} s: another process keeps it"
                    ) from None
                raise
        turn.holder = task
        info[_TURN] = turn

    def give_back(self, info: dict[Any, Any]) -> None:
        fd = info.pop(_MACHINE_TURN, None)
        if fd is not None:
            MachineTurn.give_back(fd)
        turn = info.pop(_TURN, None)
        if turn is not None:
            turn.holder = None
            turn.lock.release()


def _sqlite_transactions(engine: AsyncEngine) -> None:
    """SQLAlchemy's recipe with BEGIN IMMEDIATE (see the module's docstring), and write
    transactions taking turns (``WriteTurns``)."""
    database = engine.url.database or ""
    in_file = database not in ("", ":memory:") and not database.startswith("file:")
    turns = WriteTurns(MachineTurn(Path(f"{database}.turns")) if in_file else None)

    def begin(conn: Connection) -> None:
        # A reader begins deferred and cannot write (a write in it fails at once: "attempt
        # to write a readonly database"); a writer begins immediately, in its turn.
        read_only = bool(conn.get_execution_options().get(READ_ONLY, False))
        if conn.info.get(_QUERY_ONLY, False) != read_only:
            conn.exec_driver_sql(f"PRAGMA query_only = {'ON' if read_only else 'OFF'}")
            conn.info[_QUERY_ONLY] = read_only
        if read_only:
            conn.exec_driver_sql("BEGIN DEFERRED")
            return
        turns.take(conn.info)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turns.give_back(conn.info)
            raise

    def ended(conn: Connection) -> None:
        turns.give_back(conn.info)

    def given_back(_dbapi_connection: Any, record: Any, *_: Any) -> None:
        # A connection returned, collected or invalidated in the middle of its transaction.
        if record is not None:
            turns.give_back(record.info)

    sync_engine = engine.sync_engine
    event.listen(sync_engine, "connect", _tune_sqlite)
    event.listen(sync_engine, "begin", begin)
    event.listen(sync_engine, "commit", ended)
    event.listen(sync_engine, "rollback", ended)
    event.listen(sync_engine.pool, "checkin", given_back)
    event.listen(sync_engine.pool, "invalidate", given_back)


def create_engine(url: str) -> AsyncEngine:
    """The engine of the API and the worker. Its errors never show the statement's bound
    parameters (``hide_parameters``): they may be a secret, sealed or not, or customer data,
    and database errors end up in logs and in answers."""
    driver_url = _driver_url(url, asynchronous=True)
    if driver_url.get_backend_name() == "sqlite":
        engine = create_async_engine(driver_url, hide_parameters=True)
        _sqlite_transactions(engine)
        return engine
    return create_async_engine(
        driver_url, hide_parameters=True, pool_pre_ping=True, pool_size=10, max_overflow=20
    )


class NudgeSession(Session):
    """The sessions' class: it knows whether its transaction has written (``wrote``)."""


@event.listens_for(NudgeSession, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    session.info[_WROTE] = True


@event.listens_for(NudgeSession, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


@event.listens_for(NudgeSession, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


def wrote(session: AsyncSession) -> bool:
    """Whether the session's transaction holds writes, flushed or not."""
    return bool(session.new or session.dirty or session.deleted or session.info.get(_WROTE))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=NudgeSession)


_readers: WeakKeyDictionary[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]]
_readers = WeakKeyDictionary()


def read_only(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """The same sessions for work that only reads. On SQLite their transactions begin
    deferred: they take no write lock (WAL readers never wait for a writer, nor it for them)
    and their connection is `query_only`, so a write in one fails at once instead of racing
    for the lock. On PostgreSQL, ``sessions`` itself."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return sessions
    readers = _readers.get(sessions)
    if readers is None:
        kw = {**sessions.kw, "bind": bind.execution_options(**{READ_ONLY: True})}
        readers = _readers[sessions] = async_sessionmaker(class_=sessions.class_, **kw)
    return readers


class SessionsBeside(async_sessionmaker[AsyncSession]):
    """Sessions a request opens beside its own one (``beside``), for work that commits in
    transactions of its own (enrolling, then starting the run).

    On SQLite a transaction holds the write lock from its first statement, so a transaction
    of these begun while ``beside`` is still in one would wait for it until busy_timeout, and
    fail. ``transaction()`` therefore ends ``beside``'s transaction first: committed when it
    has only read (the objects it loaded stay loaded, ``expire_on_commit`` being off), and
    refused at once when it holds writes, a bug that would otherwise deadlock. On PostgreSQL
    nothing is ended.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], beside: AsyncSession) -> None:
        super().__init__(class_=sessions.class_, **sessions.kw)
        self.beside = beside

    async def end_reading(self) -> None:
        own = self.beside
        if not own.in_transaction() or own.bind is None or own.bind.dialect.name != "sqlite":
            return
        if wrote(own):
            raise RuntimeError(
                "the request's session holds uncommitted writes while a transaction of its own"
                " begins: on SQLite that waits for itself; commit the request's session first"
            )
        await own.commit()


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on any error."""
    if isinstance(sessions, SessionsBeside):
        await sessions.end_reading()
    async with sessions() as session, session.begin():
        yield session


def migrate(url: str) -> None:
    """Bring the database to the newest schema (what `nudge migrate` runs)."""
    from alembic import command
    from alembic.config import Config

    sync_url = _driver_url(url, asynchronous=False)
    if sync_url.get_backend_name() == "sqlite" and sync_url.database:
        Path(sync_url.database).parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["sqlalchemy_url"] = sync_url
    command.upgrade(config, "head")
