"""Run ``python -m fxlazy`` in separate processes, all at once, as a user would from a shell."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    """Exit status and output of one finished run."""

    returncode: int
    stdout: str
    stderr: str


def run_fxlazy_concurrently(
    runs: Mapping[str, Sequence[str]],
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> dict[str, Finished]:
    """Start ``python -m fxlazy ARGS`` for every entry at once and wait for all of them.

    Each run spends seconds importing torch, so starting them together saves that time.
    ``timeout`` is in seconds per run; a run still going when the wait ends is killed.
    """
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "fxlazy", *arguments],
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, arguments in runs.items()
    }
    finished = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=timeout)
            finished[name] = Finished(process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return finished
