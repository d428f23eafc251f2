"""Helpers shared by the stages of bench_materialize.py: formatting, logging, subprocesses and peak RSS."""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

BENCHMARK_DIR = Path(__file__).resolve().parent
BENCHMARK_SCRIPT = BENCHMARK_DIR / "bench_materialize.py"
# Error texts in the tables are cut to this many characters.
MAX_ERROR_CHARS = 160
# The stages log the progress of their rounds at most this often, in seconds.
PROGRESS_INTERVAL_SECONDS = 30.0


def format_ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def format_range_ms(samples: Sequence[float]) -> str:
    return f"{format_ms(min(samples))}-{format_ms(max(samples))}"


def format_ratio(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def count_noun(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def markdown_table(rows: list[list[Any]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def run_child(command: list[str]) -> dict[str, Any]:
    """Run ``command`` in a fresh Python process and return the JSON object that it prints last."""
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(
            f"Benchmark subprocess {shlex.join(command)} failed with exit status "
            f"{completed.returncode}. Its stderr ends with:\n{completed.stderr[-3000:]}"
        )
    # The result is the last stdout line, because torch may print warnings before it.
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_script_child(arguments: list[str]) -> dict[str, Any]:
    """Run bench_materialize.py in a fresh Python process with a hidden flag and return its JSON result."""
    return run_child([sys.executable, str(BENCHMARK_SCRIPT), *arguments])


# The start of the run, for the elapsed time in progress lines.
_RUN_START = time.perf_counter()


def log_progress(message: str) -> None:
    """Print a progress line to stderr, prefixed with the minutes and seconds since the run started."""
    elapsed = int(time.perf_counter() - _RUN_START)
    print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


class ThrottledLog:
    """Log progress lines, skipping those that come within PROGRESS_INTERVAL_SECONDS of the last one."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def log(self, message: str) -> None:
        now = time.perf_counter()
        if now - self.last >= PROGRESS_INTERVAL_SECONDS:
            log_progress(message)
            self.last = now


def median_and_range_ms(values: Sequence[float]) -> list[str]:
    if not values:
        return ["n/a", "n/a"]
    return [format_ms(statistics.median(values)), format_range_ms(values)]


def extra_mib(result: dict[str, Any]) -> float:
    return (result["peak_kib"] - result["baseline_kib"]) / 1024


def describe_error(error: BaseException) -> str:
    """Return the exception's type and the first line of its message, safe for a Markdown table cell."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return text.replace("|", "\\|")

