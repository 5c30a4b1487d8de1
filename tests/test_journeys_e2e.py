"""The chat-menu walk-through (docs/journeys-walkthrough.md) against a real `nudge dev`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_dev_stack import DevRun, hermetic_env, running_dev, stop
from tests.utils.waiting import eventually_blocking

pytestmark = pytest.mark.e2e

MENU = r"How can we help\? Reply with a number:\\n1 Product"
PRODUCT = r"Product\. Reply with a number:"


class Walk:
    """Lin, writing to the demo tenant on the `console` channel."""

    def __init__(self, run: DevRun) -> None:
        self.run = run
        self.admin = {"Authorization": f"Bearer {run.demo_key()}"}
        self.said = 0

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else self.admin
        answer = httpx.request(method, self.run.api + path, headers=headers, timeout=10, **kwargs)
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None

    def say(self, text: str) -> dict[str, Any]:
        self.said += 1
        event = {
            "contact_id": "lin",
            "direction": "incoming",
            "channel": "console",
            "text": text,
            "message_id": f"lin-{self.said}",
        }
        accepted: dict[str, Any] = self.call("POST", "/v1/events/messages", json=event)
        return accepted

    def logged(self, pattern: str, times: int = 1) -> None:
        """Wait until the worker has logged ``times`` console messages to Lin matching it."""
        line = re.compile(rf"channel=console recipient='lin' .*text='{pattern}")

        def seen() -> bool:
            log = self.run.errors()
            found = len(line.findall(log))
            assert found >= times, f"logged {found} of {times} times; the log:\n{log[-3000:]}"
            return True

        eventually_blocking(seen, timeout=20, interval=0.2, message=f"the worker logs {pattern}")

    def inbox(self, key: str | None = None) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.call("GET", "/v1/contacts/lin/journeys", key)["items"]
        return listed


def agent_key(data_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "nudge", "key", "create", "--tenant", "demo", "--role", "agent",
         "--json"],
        env={**hermetic_env(), "NUDGE_DATA_DIR": str(data_dir)},
        capture_output=True,
        check=True,
        timeout=60,
    )  # fmt: skip
    key: str = json.loads(done.stdout)["api_key"]
    return key


def test_the_chat_menu_walk_through_on_the_dev_stack(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_dev(data_dir, tmp_path / "first") as run:
        walk = Walk(run)
        journeys = walk.call("GET", "/v1/journeys")["items"]
        assert sorted(j["name"] for j in journeys if j["status"] == "published") == [
            "Chat menu: about us",
            "Chat menu: main menu",
            "Chat menu: product",
            "Chat menu: service",
            "Chat menu: talk to sales",
            "Service flow",
        ]
        walk.call("PUT", "/v1/contacts/lin", json={"name": "Lin"})

        assert len(walk.say("hi")["journeys_started"]) == 1
        walk.logged("Hi Lin! Welcome to Nudge.")
        walk.logged(MENU)
        walk.say("1")
        walk.logged(PRODUCT)
        assert [(j["journey_name"], j["current_step"]) for j in walk.inbox()] == [
            ("Chat menu: product", "menu")
        ]
        walk.say("0")
        walk.logged(MENU, times=2)
        [main] = walk.inbox()
        assert (main["journey_name"], main["current_step"]) == ("Chat menu: main menu", "menu")

        agent = agent_key(data_dir)
        stopped = walk.call(
            "POST",
            f"/v1/contacts/lin/journeys/{main['journey_id']}/stop",
            agent,
            json={"agent": "grace", "reason": "taking over the chat"},
        )
        assert (stopped["state"], stopped["ended_by"]) == ("stopped", "agent grace")
        assert walk.inbox(agent) == []
        stop(run, signal.SIGINT)

    with running_dev(data_dir, tmp_path / "second") as again:
        # Imported on first start only: the same six journeys, no second menu.
        assert len(Walk(again).call("GET", "/v1/journeys")["items"]) == 6
        assert "imported the chat-menu template" not in again.errors()
        stop(again, signal.SIGINT)
