"""The memory stage: each method's extra peak RSS, one fresh subprocess per call."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fxlazy.examples import ResNetClassifier, UpsamplingDecoder

from bench_common import extra_mib, format_ratio, log_progress, markdown_table, run_script_child
from bench_methods import METHODS, METHODS_BY_KEY, run_method
from bench_models import MODELS, BenchModel
from bench_proc import peak_rss_kib


# Small models that a warmed-up child runs through the method once before it measures.
# Between them they use every layer kind of the benchmark models, so the measured call
# finds fx's and fxlazy's caches already filled, as every call after a process's first does.
WARM_UP_MODELS = (
    BenchModel(
        "warm-up-decoder",
        "UpsamplingDecoder(8, channels=8)",
        lambda lazy: UpsamplingDecoder(8, channels=8, lazy=lazy),
        lambda: UpsamplingDecoder(8, channels=8).example_input(batch=1),
        repeats=1,
        forward_repeats=1,
    ),
    BenchModel(
        "warm-up-resnet",
        "ResNetClassifier(widths=(4, 8))",
        lambda lazy: ResNetClassifier(widths=(4, 8), lazy=lazy),
        lambda: ResNetClassifier.example_input(batch=1, size=8),
        repeats=1,
        forward_repeats=1,
    ),
)


def measure_memory_in_child(model_key: str, method_key: str, warm: bool = False) -> dict[str, Any]:
    """Return the peak RSS before and after one call in this process, or the error text of a failed call.

    With ``warm``, the method first runs once on each of ``WARM_UP_MODELS``, whose own
    peak stays below the measured call's.
    """
    model = MODELS[model_key]
    method = METHODS_BY_KEY[method_key]
    if warm:
        for warm_up in WARM_UP_MODELS:
            _, error = run_method(method, warm_up, warm_up.make_example())
            if error is not None:
                return {"error": f"warm-up on {warm_up.description} failed: {error}"}
    example = model.make_example()
    gc.collect()
    baseline_kib = peak_rss_kib()
    result, error = run_method(method, model, example)
    if error is not None:
        return {"error": error}
    peak_kib = peak_rss_kib()
    del result
    return {"baseline_kib": baseline_kib, "peak_kib": peak_kib}


@dataclass
class MemoryResults:
    """Each method's result per model, from first calls in fresh processes and from warmed-up processes."""

    cold: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    warm: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def measure_memory(model_keys: Sequence[str]) -> MemoryResults:
    """Run each method of each model once per variant, each in its own subprocess, one at a time."""
    results = MemoryResults()
    for model_key in model_keys:
        results.cold[model_key] = {}
        results.warm[model_key] = {}
        for method in METHODS:
            log_progress(f"memory: {model_key}, {method.label}, first call in the process")
            results.cold[model_key][method.key] = run_script_child(["--child-memory", model_key, method.key])
            log_progress(f"memory: {model_key}, {method.label}, after a warm-up")
            results.warm[model_key][method.key] = run_script_child(
                ["--child-memory", model_key, method.key, "--child-memory-warm"]
            )
    return results


def memory_ratio(by_method: dict[str, dict[str, Any]], method_key: str) -> float | None:
    """Return the method's extra peak RSS divided by the floor's.

    Returns None when either call failed or the floor's extra peak is not positive.
    """
    result, floor = by_method[method_key], by_method["floor"]
    if "error" in result or "error" in floor or extra_mib(floor) <= 0:
        return None
    return extra_mib(result) / extra_mib(floor)


def _extra_and_ratio(by_method: dict[str, dict[str, Any]], method_key: str) -> list[str]:
    result = by_method[method_key]
    if "error" in result:
        return [f"failed: {result['error']}", ""]
    ratio = memory_ratio(by_method, method_key)
    return [f"{extra_mib(result):.1f}", format_ratio(ratio) if ratio is not None else "n/a"]


def format_memory(results: MemoryResults) -> str:
    rows = []
    for model_key, cold in results.cold.items():
        warm = results.warm[model_key]
        for method in METHODS:
            baseline = cold[method.key].get("baseline_kib")
            rows.append([
                model_key,
                method.label,
                *_extra_and_ratio(cold, method.key),
                *_extra_and_ratio(warm, method.key),
                f"{baseline / 1024:.0f}" if baseline is not None else "",
            ])

    table = markdown_table(
        rows,
        [
            "model",
            "method",
            "first call: extra peak RSS (MiB)",
            "first call: extra / floor's",
            "after warm-up: extra peak RSS (MiB)",
            "after warm-up: extra / floor's",
            "first call: peak RSS before it (MiB)",
        ],
    )
    warm_ups = " and ".join(model.description for model in WARM_UP_MODELS)
    return (
        "## Peak memory\n\nEach method runs in its own fresh process, twice: once as the process's "
        "first call, and once after the same method ran on two small models "
        f"({warm_ups}) in that process. Extra peak RSS is the process's peak RSS (VmHWM) after the "
        "measured call minus its peak RSS just before it, after importing torch and fxlazy and "
        "building the example input. The first call includes what fx, fxlazy and torch allocate "
        "once per process (caches, code objects); the warmed-up call is what every later call "
        f"costs.\n\n{table}\n"
    )
