"""The memory stage: each method's extra peak RSS, one fresh subprocess per call."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

from bench_common import extra_mib, format_ratio, log_progress, markdown_table, peak_rss_kib, run_script_child
from bench_methods import METHODS, METHODS_BY_KEY, run_method
from bench_models import MODELS


def measure_memory_in_child(model_key: str, method_key: str) -> dict[str, Any]:
    """Return the peak RSS before and after one call in this process, or the error text of a failed call."""
    model = MODELS[model_key]
    example = model.make_example()
    gc.collect()
    baseline_kib = peak_rss_kib()
    result, error = run_method(METHODS_BY_KEY[method_key], model, example)
    if error is not None:
        return {"error": error}
    peak_kib = peak_rss_kib()
    del result
    return {"baseline_kib": baseline_kib, "peak_kib": peak_kib}


def measure_memory(model_keys: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Run each method of each model once, each in its own subprocess, one subprocess at a time."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for model_key in model_keys:
        results[model_key] = {}
        for method in METHODS:
            log_progress(f"memory: {model_key}, {method.label}")
            results[model_key][method.key] = run_script_child(["--child-memory", model_key, method.key])
    return results


def memory_ratio(by_method: dict[str, dict[str, Any]], method_key: str) -> float | None:
    """Return the method's extra peak RSS divided by the floor's.

    Returns None when either call failed or the floor's extra peak is not positive.
    """
    result, floor = by_method[method_key], by_method["floor"]
    if "error" in result or "error" in floor or extra_mib(floor) <= 0:
        return None
    return extra_mib(result) / extra_mib(floor)


def format_memory(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = []
    for model_key, by_method in results.items():
        for method in METHODS:
            result = by_method[method.key]
            if "error" in result:
                rows.append([model_key, method.label, f"failed: {result['error']}", "", ""])
                continue
            ratio = memory_ratio(by_method, method.key)
            rows.append([
                model_key,
                method.label,
                f"{extra_mib(result):.0f}",
                format_ratio(ratio) if ratio is not None else "n/a",
                f"{result['baseline_kib'] / 1024:.0f}",
            ])

    table = markdown_table(
        rows, ["model", "method", "extra peak RSS (MiB)", "extra / floor's extra", "peak RSS before the call (MiB)"]
    )
    return (
        "## Peak memory\n\nEach method once, in its own fresh process. Extra peak RSS is the "
        "process's peak RSS (VmHWM) after the call minus its peak RSS after importing torch and "
        "fxlazy and building the example input.\n\n"
        f"{table}\n"
    )
