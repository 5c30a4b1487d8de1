"""Settings from NUDGE_* variables, and the rules that keep production safe."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from nudge.settings import Settings

PRODUCTION = {
    "env": "production",
    "database_url": "postgresql+psycopg://nudge@db/nudge",
    "secret_key": Fernet.generate_key().decode(),
}


def test_settings_come_from_nudge_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUDGE_TEMPORAL_ADDRESS", "temporal:7233")
    monkeypatch.setenv("NUDGE_TIME_SCALE", "60")
    settings = Settings()
    assert settings.temporal_address == "temporal:7233"
    assert settings.time_scale == 60


def test_time_scale_other_than_one_is_refused_in_production() -> None:
    assert Settings(**PRODUCTION, time_scale=1).time_scale == 1
    with pytest.raises(ValidationError, match="NUDGE_TIME_SCALE must be 1"):
        Settings(**PRODUCTION, time_scale=10)


def test_time_scale_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="time_scale"):
        Settings(time_scale=0)


def test_production_needs_a_secret_key_and_postgresql() -> None:
    with pytest.raises(ValidationError, match="NUDGE_SECRET_KEY"):
        Settings(**{**PRODUCTION, "secret_key": None})
    with pytest.raises(ValidationError, match="PostgreSQL"):
        Settings(**{**PRODUCTION, "database_url": "sqlite:///x.db"})


def test_a_time_scale_is_announced_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        Settings(time_scale=120).announce()
    assert "NUDGE_TIME_SCALE=120" in caplog.text
    caplog.clear()
    Settings().announce()
    assert caplog.text == ""


def test_development_keeps_one_secret_key_under_the_data_dir(tmp_path: object) -> None:
    from pathlib import Path

    data_dir = Path(str(tmp_path))
    first = Settings(data_dir=data_dir).secret_key_value()
    assert Settings(data_dir=data_dir).secret_key_value() == first
    assert (data_dir / "secret.key").stat().st_mode & 0o077 == 0
