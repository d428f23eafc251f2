"""The cold-start stage: import and first materialize call in fresh processes.

Each measurement runs cold_start_child.py in a new process, because that script imports
torch and fxlazy itself and so can time those imports.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench_common import (
    BENCHMARK_DIR,
    count_noun,
    format_ms,
    log_progress,
    markdown_table,
    median_and_range_ms,
    run_child,
)

COLD_START_CHILD = BENCHMARK_DIR / "cold_start_child.py"
# The cold-start tables name at most this many packages, or skipped modules, in a cell.
MAX_PACKAGES_SHOWN = 4


def run_cold_start_child(model_key: str, preimport: Sequence[str] = ()) -> dict[str, Any]:
    return run_child([sys.executable, str(COLD_START_CHILD), model_key, ",".join(preimport)])


@dataclass
class ColdStart:
    """The cold-start measurements of one model."""

    runs: list[dict[str, Any]]
    # Modules that the first call imported in any run, in the order they were imported.
    imported: list[str]
    # Runs that imported ``imported`` before the first call, empty when nothing was imported.
    preimported_runs: list[dict[str, Any]]

    def added_seconds(self) -> list[float]:
        """Return, per run, what fxlazy added to importing torch: importing fxlazy plus the first materialize call."""
        return [run["fxlazy_seconds"] + run["first_materialize_seconds"] for run in self.runs]


def measure_cold_start(model_keys: Sequence[str], processes: int) -> dict[str, ColdStart]:
    results: dict[str, ColdStart] = {}
    for model_key in model_keys:
        log_progress(f"cold start: {model_key}, {count_noun(processes, 'process', 'processes')}")
        runs = [run_cold_start_child(model_key) for _ in range(processes)]
        imported = list(dict.fromkeys(name for run in runs for name in run["imported"]))

        preimported_runs: list[dict[str, Any]] = []
        if imported:
            log_progress(
                f"cold start: {model_key}, {count_noun(processes, 'process', 'processes')} "
                f"with {len(imported)} modules imported first"
            )
            preimported_runs = [run_cold_start_child(model_key, imported) for _ in range(processes)]
        results[model_key] = ColdStart(runs, imported, preimported_runs)
    return results


def summarize_packages(module_names: Sequence[str]) -> str:
    """Name the packages that contain the most of ``module_names``, with their module counts."""

    def package_of(name: str) -> str:
        parts = name.split(".")
        # torch is already imported, so its new modules are grouped by subpackage.
        return ".".join(parts[:3]) if parts[0] == "torch" else parts[0]

    counts = Counter(package_of(name) for name in module_names)
    entries = [f"{package} ({count})" for package, count in counts.most_common(MAX_PACKAGES_SHOWN)]
    if len(counts) > MAX_PACKAGES_SHOWN:
        entries.append(f"{len(counts) - MAX_PACKAGES_SHOWN} more")
    return ", ".join(entries)


def field_values(runs: Sequence[dict[str, Any]], name: str) -> list[Any]:
    return [run[name] for run in runs]


def summarize_skipped(names: Sequence[str]) -> str:
    if not names:
        return "none"
    listed = ", ".join(names[:MAX_PACKAGES_SHOWN])
    return f"{len(names)}: {listed}" + (", ..." if len(names) > MAX_PACKAGES_SHOWN else "")


def format_cold_start(results: dict[str, ColdStart]) -> str:
    time_rows = []
    import_rows = []
    for model_key, cold_start in results.items():
        runs = cold_start.runs
        time_rows.append([
            model_key,
            len(runs),
            format_ms(statistics.median(field_values(runs, "torch_seconds"))),
            format_ms(statistics.median(field_values(runs, "fxlazy_seconds"))),
            format_ms(statistics.median(field_values(runs, "first_build_seconds"))),
            *median_and_range_ms(field_values(runs, "first_materialize_seconds")),
            *median_and_range_ms(cold_start.added_seconds()),
            *median_and_range_ms(field_values(cold_start.preimported_runs, "first_materialize_seconds")),
            *median_and_range_ms(field_values(runs, "second_materialize_seconds")),
        ])
        if cold_start.preimported_runs:
            preimported_runs = cold_start.preimported_runs
            skipped = sorted({name for run in preimported_runs for name in run["preimport_failed"]})
            extra_mib = statistics.median(field_values(preimported_runs, "preimport_extra_kib")) / 1024
            import_rows.append([
                model_key,
                len(cold_start.imported),
                summarize_packages(cold_start.imported),
                *median_and_range_ms(field_values(preimported_runs, "preimport_seconds")),
                f"{extra_mib:.0f}",
                summarize_skipped(skipped),
            ])

    time_table = markdown_table(
        time_rows,
        [
            "model",
            "processes",
            "import torch, median (ms)",
            "import fxlazy, median (ms)",
            "first build, median (ms)",
            "first materialize, median (ms)",
            "min-max (ms)",
            "import fxlazy + first materialize, median (ms)",
            "min-max (ms)",
            "first materialize, modules imported before, median (ms)",
            "min-max (ms)",
            "second materialize, median (ms)",
            "min-max (ms)",
        ],
    )
    text = (
        "## Cold start\n\nFresh processes (cold_start_child.py) import torch, then fxlazy, then build "
        "the lazy model and materialize it, twice. Building the model is timed apart from the "
        "materialize call, because the user's code builds it with or without fxlazy. The second group "
        "of processes also imports the modules that the first call imported in the first group, "
        f"before the first build.\n\n{time_table}\n"
    )
    if import_rows:
        import_table = markdown_table(
            import_rows,
            [
                "model",
                "modules",
                "main packages (modules)",
                "import, median (ms)",
                "min-max (ms)",
                "import, extra peak RSS, median (MiB)",
                "skipped (failed to import by name)",
            ],
        )
        text += (
            "\nModules that the first call imported, and importing them in the second group of "
            f"processes, after torch and fxlazy:\n\n{import_table}\n"
        )
    else:
        text += "\nThe first call imported no modules.\n"
    return text
