"""The `nudge` command line, run as a user runs it: a process with NUDGE_* settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest


def nudge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nudge", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"NUDGE_DATABASE_URL": database_url, "NUDGE_DATA_DIR": str(tmp_path)}


def test_tenant_create_prints_a_working_admin_key_as_json(env: dict[str, str]) -> None:
    slug = f"acme-{uuid.uuid4().hex[:6]}"
    created = nudge("tenant", "create", slug, "--name", "Acme", "--json", env=env)
    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    assert answer["tenant"] == slug
    assert answer["api_key"].startswith("nk_")

    agent = nudge("key", "create", "--tenant", slug, "--role", "agent", "--json", env=env)
    assert agent.returncode == 0, agent.stderr
    assert json.loads(agent.stdout)["api_key"] != answer["api_key"]


def test_mistakes_are_one_line_errors_without_tracebacks(env: dict[str, str]) -> None:
    slug = f"acme-{uuid.uuid4().hex[:6]}"
    assert nudge("tenant", "create", slug, env=env).returncode == 0
    cases = {
        ("tenant", "create", slug): "already exists",
        ("tenant", "create", "Not A Slug"): "slug",
        ("key", "create", "--tenant", "nobody-here", "--role", "admin"): "'nobody-here' not found",
        ("key", "create", "--tenant", slug, "--role", "root"): "role must be one of",
    }
    for args, expected in cases.items():
        result = nudge(*args, env=env)
        assert result.returncode == 2, args
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_time_scale_is_refused_in_production(env: dict[str, str]) -> None:
    result = nudge(
        "migrate",
        env={
            **env,
            "NUDGE_ENV": "production",
            "NUDGE_TIME_SCALE": "60",
            "NUDGE_SECRET_KEY": "x",
            "NUDGE_DATABASE_URL": "postgresql+psycopg://db/nudge",
        },
    )
    assert result.returncode == 2
    assert "NUDGE_TIME_SCALE must be 1" in result.stderr
    assert "Traceback" not in result.stderr
    zero = nudge("migrate", env={**env, "NUDGE_TIME_SCALE": "0"})
    assert zero.returncode == 2 and "time_scale" in zero.stderr


def test_migrate_brings_a_new_database_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    result = nudge("migrate", env={"NUDGE_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert nudge("tenant", "create", "fresh", env={"NUDGE_DATABASE_URL": url}).returncode == 0


def test_every_command_has_help() -> None:
    for command in (
        ["dev"],
        ["api"],
        ["worker"],
        ["migrate"],
        ["tenant", "create"],
        ["key", "create"],
    ):
        result = nudge(*command, "--help", env={})
        assert result.returncode == 0, command
        assert "Usage" in result.stdout
