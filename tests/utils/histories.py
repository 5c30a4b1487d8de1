"""Stored workflow histories for replay tests.

Run the suite with NUDGE_RECORD_HISTORIES=1 to (re)write them after a deliberate,
compatible change; commit the files. Without it, nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent.parent / "histories"


async def keep_history(handle: WorkflowHandle[object, object], name: str) -> None:
    if os.environ.get("NUDGE_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())
