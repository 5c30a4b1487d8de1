"""`nudge dev` end to end: real Temporal dev server, worker and API as child processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nudge.dev.demo_channels import is_sample_channel
from nudge.dev.fake_whatsapp import FakeWhatsApp
from nudge.dev.ports import free_port
from tests.utils.waiting import eventually_blocking

pytestmark = pytest.mark.e2e

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
KEY_LINE = re.compile(r"Admin API key\s+(\S+)")
FAKE_LINE = re.compile(r"(WhatsApp|SMS) \(fake\)\s+(http://127\.0\.0\.1:\d+), a fake ")
PHONE = "+34600111222"


@dataclass
class DevRun:
    process: subprocess.Popen[bytes]
    api_port: int
    temporal_port: int
    ui_port: int
    stdout: Path
    stderr: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")

    def demo_key(self) -> str:
        found = KEY_LINE.search(self.output())
        assert found, f"no demo key in the banner:\n{self.output()}"
        return found.group(1)

    def sample_providers(self) -> dict[str, str]:
        """The fakes' base URLs, by the banner's name for them (WhatsApp, SMS)."""
        return dict(FAKE_LINE.findall(self.output()))


def dev_command(data_dir: Path, api_port: int, temporal_port: int, ui_port: int) -> list[str]:
    return [
        sys.executable, "-m", "nudge", "dev",
        "--api-port", str(api_port),
        "--temporal-port", str(temporal_port),
        "--ui-port", str(ui_port),
        "--data-dir", str(data_dir),
    ]  # fmt: skip


def hermetic_env() -> dict[str, str]:
    # The developer's own NUDGE_* settings (a PostgreSQL URL, a Temporal address) must not
    # leak into a stack that is meant to run on the test's data dir.
    return {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}


def descendants(root: int) -> set[int]:
    """Every live process below `root`, found through the parent pid in /proc/*/stat."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name may contain spaces and ")"; the fields after the last ")" don't.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_dev(
    data_dir: Path, logs: Path, extra_env: dict[str, str] | None = None
) -> Iterator[DevRun]:
    """`nudge dev` started and ready; whatever happens, nothing of it outlives the test."""
    api_port, temporal_port, ui_port = distinct_free_ports(3)
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / "stdout.log", logs / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            dev_command(data_dir, api_port, temporal_port, ui_port),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env={**hermetic_env(), **(extra_env or {})},
            start_new_session=True,
        )
    run = DevRun(process, api_port, temporal_port, ui_port, stdout, stderr)
    seen: set[int] = set()
    try:
        wait_for_banner(run)
        seen = descendants(process.pid)
        yield run
    finally:
        seen |= descendants(process.pid)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        kill_all({pid for pid in seen if alive(pid)})
        process.wait(timeout=5)


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def wait_for_banner(run: DevRun) -> None:
    def banner() -> bool:
        code = run.process.poll()
        if code is not None:  # no use waiting any longer
            pytest.fail(f"nudge dev exited with {code}:\n{run.errors()[-3000:]}")
        assert "Ctrl-C to stop" in run.output(), f"errors so far:\n{run.errors()[-3000:]}"
        return True

    eventually_blocking(
        banner, timeout=START_TIMEOUT, interval=0.2, message="nudge dev prints its banner"
    )


def stop(run: DevRun, sig: signal.Signals) -> None:
    """Send `sig` and check that the stack ends in time and leaves no process behind."""
    tree = descendants(run.process.pid)
    assert len(tree) >= 3, f"expected Temporal, worker and API under nudge dev, got {tree}"
    started = time.monotonic()
    run.process.send_signal(sig)
    code = run.process.wait(timeout=STOP_TIMEOUT)
    assert time.monotonic() - started < STOP_TIMEOUT
    assert code == 0, run.errors()[-3000:]
    left = {pid for pid in tree if alive(pid)}
    assert not left, f"processes left behind: {left}"
    assert "Traceback" not in run.errors()


def get_contact(run: DevRun, key: str) -> int:
    response = httpx.get(
        f"{run.api}/v1/contacts/nobody", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return response.status_code


def ui_status(port: int) -> int:
    # The Web UI may come up a moment after the gRPC port that `nudge dev` waits for.
    def answer() -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code
        except httpx.HTTPError as exc:
            raise AssertionError(f"the Web UI does not answer: {exc!r}") from exc

    return eventually_blocking(answer, timeout=15, interval=0.3, message="the Web UI answers")


def demo_channels_point_at(run: DevRun, api: httpx.Client) -> dict[str, str]:
    """Check that the demo channels call the fakes of the banner; their webhook URLs."""
    fakes = run.sample_providers()
    assert set(fakes) == {"WhatsApp", "SMS"}, run.output()
    hooks: dict[str, str] = {}
    for slug, name in (("whatsapp", "WhatsApp"), ("sms", "SMS")):
        channel = api.get(f"/v1/channels/{slug}").raise_for_status().json()
        assert channel["type"] == slug
        assert channel["config"]["base_url"].rstrip("/") == fakes[name]
        # The public URL of the dev API, which Twilio's signatures are computed over.
        assert channel["webhook_url"] == f"{run.api}/v1/webhooks/demo/{slug}"
        hooks[slug] = channel["webhook_url"]
    assert api.get("/v1/channels/whatsapp").json()["fallback"] == ["sms"]
    return hooks


def read_on(api: httpx.Client, channel: str) -> dict[str, Any]:
    """Send a text to Ada on ``channel``; its delivery once the fake's receipts say read."""
    body = {"contact_id": "ada", "channel": channel, "message": {"kind": "text", "text": "Hi"}}
    notification = api.post("/v1/notifications", json=body).raise_for_status().json()

    def read() -> dict[str, Any] | None:
        answer = api.get(f"/v1/notifications/{notification['id']}").raise_for_status()
        delivery: dict[str, Any] | None = answer.json()["delivery"]
        return delivery if delivery is not None and delivery["status"] == "read" else None

    found: dict[str, Any] = eventually_blocking(
        read, timeout=20, interval=0.2, message=f"the {channel} message is read"
    )
    return found


def test_dev_runs_the_stack_and_stops_on_sigint(tmp_path: Path) -> None:
    with running_dev(tmp_path / "data", tmp_path / "logs") as run:
        health = httpx.get(f"{run.api}/healthz", timeout=10)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert ui_status(run.ui_port) == 200

        key = run.demo_key()
        assert str(tmp_path / "data" / "demo-api-key") in run.output()
        assert (tmp_path / "data" / "demo-api-key").read_text().strip() == key
        assert get_contact(run, key) == 404
        assert get_contact(run, key + "x") == 401
        # The banner says that outbound calls may reach this machine, in development only.
        assert "may also reach 127.0.0.0/8,::1,localhost (development only)" in run.output()

        # The sample providers: the demo channels on the fakes, whose receipts come back.
        with httpx.Client(
            base_url=run.api, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as api:
            hooks = demo_channels_point_at(run, api)
            contact = {"name": "Ada", "email": "ada@example.com", "phone": "+34 600 11 12 22"}
            api.put("/v1/contacts/ada", json=contact).raise_for_status()
            sms = read_on(api, "sms")  # signed callbacks to the StatusCallback Nudge set
            assert [r["status"] for r in sms["receipts"]] == ["sent", "delivered", "read"]
            # Ada writes on WhatsApp (as the fake posts it, signed), which opens the window.
            contact_writes = FakeWhatsApp()
            contact_writes.webhook_url = hooks["whatsapp"]
            answer, _wamid = contact_writes.send_text(PHONE.removeprefix("+"), "Good morning")
            assert answer.status_code == 200, answer.text
            whatsapp = read_on(api, "whatsapp")
            assert whatsapp["channel"] == "whatsapp" and whatsapp["fallbacks"] == []

        stop(run, signal.SIGINT)


def test_second_start_reuses_the_data_and_sigterm_stops(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_dev(data_dir, tmp_path / "first") as first:
        key = first.demo_key()
        stop(first, signal.SIGTERM)

    with running_dev(data_dir, tmp_path / "second") as second:
        assert second.demo_key() == key
        assert get_contact(second, key) == 404
        # The fakes have new ports, and the demo channels follow them.
        with httpx.Client(
            base_url=second.api, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as api:
            demo_channels_point_at(second, api)
        stop(second, signal.SIGINT)
    assert (data_dir / "temporal.db").exists()


def test_busy_port_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        temporal_port, ui_port = distinct_free_ports(2)
        done = subprocess.run(
            dev_command(tmp_path / "data", busy, temporal_port, ui_port),
            capture_output=True,
            text=True,
            env=hermetic_env(),
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {busy} is busy (--api-port)" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists(), "nothing may start before the ports are checked"


def test_only_channels_on_this_machine_are_taken_for_sample_ones() -> None:
    # `nudge dev` re-points those at the fakes on every start, and leaves the others alone.
    def sms(base_url: str) -> dict[str, Any]:
        return {"type": "sms", "config": {"base_url": base_url}}

    assert is_sample_channel(sms("http://127.0.0.1:40123/"), "sms")
    assert is_sample_channel(sms("http://localhost:40123"), "sms")
    assert not is_sample_channel(sms("https://api.twilio.com/"), "sms")
    assert not is_sample_channel(sms("http://127.0.0.1:40123/"), "whatsapp")
    assert not is_sample_channel({"type": "log", "config": {}}, "log")
