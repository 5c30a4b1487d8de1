"""The worker leaves bytecode for Nudge's modules, so the sandbox's per-run imports of a
workflow read it instead of compiling the source each time (PYTHONDONTWRITEBYTECODE on)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nudge

# Run in a copy of the package, so the checkout's own cache cannot answer for it.
PROBE = """
import importlib._bootstrap_external as external
import sys

compiled = []
original = external.SourceLoader.source_to_code

def counting(self, data, path, *args, **kwargs):
    compiled.append(str(path))
    return original(self, data, path, *args, **kwargs)

if sys.argv[1] == "cache":
    from nudge.workers.bytecode import cache_nudge_bytecode
    cache_nudge_bytecode()
external.SourceLoader.source_to_code = counting
import nudge.workflows.journey  # what the sandbox imports for every journey run
print("\\n".join(path for path in compiled if "/nudge/" in path))
"""


def probe(root: Path, mode: str) -> list[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(root)}
    env.pop("PYTHONPYCACHEPREFIX", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_cached_bytecode_spares_the_sandbox_compiling_workflow_modules(tmp_path: Path) -> None:
    shutil.copytree(
        Path(nudge.__file__).parent,
        tmp_path / "nudge",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    without = probe(tmp_path, "plain")
    assert any(path.endswith("workflows/journey.py") for path in without), without

    assert probe(tmp_path, "cache") == []
    assert (tmp_path / "nudge" / "workflows" / "__pycache__").is_dir()
