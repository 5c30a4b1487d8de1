"""Bytecode on disk for the modules the workflow sandbox imports again for every run.

The sandbox imports a workflow's own modules afresh each time it creates a run in the
worker (a new run, or one replayed after leaving the workflow cache). Without a bytecode
cache on disk, which ``PYTHONDONTWRITEBYTECODE`` (set in many containers) or a read-only
install leaves out, every one of those imports compiles the source again: measured in a
burst of journey exits, a third of the worker's CPU went to compiling ``journey.py``.
So the worker compiles Nudge's modules once when it starts; imports then read the cache.
"""

from __future__ import annotations

import compileall
import functools
import logging
import os
import sys
import tempfile
from pathlib import Path

import nudge

log = logging.getLogger(__name__)


@functools.cache
def cache_nudge_bytecode() -> None:
    """Compile the ``nudge`` package where imports will look for it (beside the sources,
    or under a private ``sys.pycache_prefix`` when they cannot be written), once per
    process. Files already compiled and unchanged are left as they are."""
    package = Path(nudge.__file__).parent
    if not os.access(package, os.W_OK) and sys.pycache_prefix is None:
        # Set before compiling: the import system and compileall both place files by it.
        sys.pycache_prefix = tempfile.mkdtemp(prefix="nudge-bytecode-")
    compiled = compileall.compile_dir(package, quiet=1)
    if not compiled:
        log.warning("some of Nudge's modules could not be compiled; workflow runs are slower")
