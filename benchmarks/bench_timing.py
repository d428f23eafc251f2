"""The timing stage: each method's calls, alternating in one process."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass

import torch

from bench_common import (
    ThrottledLog,
    count_noun,
    format_duration,
    format_ms,
    format_range_ms,
    format_ratio,
    log_progress,
    markdown_table,
)
from bench_methods import METHODS, Method, run_method
from bench_models import BenchModel


@dataclass(frozen=True)
class CallTime:
    """Wall-clock and CPU seconds of one call."""

    wall: float
    # CPU time of all threads of this process (time.process_time). Unlike wall time, it
    # does not count time spent waiting for a core, so it suffers less from other processes.
    cpu: float


@dataclass
class ModelTiming:
    """The timing stage's results for one model."""

    # Call times by method key, for the methods that did not fail.
    samples: dict[str, list[CallTime]]
    # Error text by method key, for ``may_fail`` methods that raised.
    failures: dict[str, str]
    # Nodes in the graph of the GraphModule that fxlazy returned.
    graph_nodes: int

    def median_wall(self, method_key: str) -> float | None:
        values = self.samples.get(method_key)
        return statistics.median(sample.wall for sample in values) if values else None

    def overhead_per_node_us(self) -> float | None:
        """Return fxlazy's overhead per graph node in microseconds, or None if floor + symbolic_trace failed.

        The overhead is (median(fxlazy) - median(floor + symbolic_trace)) / graph nodes, from
        wall-clock medians.
        """
        traced_floor = self.median_wall("floor-trace")
        if traced_floor is None:
            return None
        return (self.median_wall("fxlazy") - traced_floor) / self.graph_nodes * 1e6


def time_call(method: Method, model: BenchModel, example: torch.Tensor) -> tuple[CallTime, str | None]:
    """Time one call and free its result, returning the time and the error text of a failed ``may_fail`` call."""
    gc.collect()
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    result, error = run_method(method, model, example)
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - wall_start
    # Freed only after the clock stopped, and collected before the next call, so that two
    # copies of a large model are never alive together.
    del result
    return CallTime(wall, cpu), error


def run_warm_up_round(model: BenchModel, example: torch.Tensor) -> tuple[dict[str, str], int]:
    """Call each method once and return the failed methods' error texts and the node count of fxlazy's graph."""
    failures: dict[str, str] = {}
    graph_nodes = 0
    for method in METHODS:
        gc.collect()
        result, error = run_method(method, model, example)
        if error is not None:
            failures[method.key] = error
        elif method.key == "fxlazy":
            graph_nodes = len(result.graph.nodes)
        del result
    return failures, graph_nodes


def time_round_robin(model: BenchModel, example: torch.Tensor, repeats: int) -> ModelTiming:
    """Return each method's call times, from ``repeats`` rounds after one warm-up round."""
    warm_up_start = time.perf_counter()
    failures, graph_nodes = run_warm_up_round(model, example)
    round_seconds = time.perf_counter() - warm_up_start
    log_progress(
        f"timing: {model.name}, warm-up round took {format_duration(round_seconds)}, so "
        f"{count_noun(repeats, 'round', 'rounds')} "
        f"should take about {format_duration(round_seconds * repeats)}"
    )

    active = [method for method in METHODS if method.key not in failures]
    samples: dict[str, list[CallTime]] = {method.key: [] for method in active}
    progress = ThrottledLog()
    for round_index in range(repeats):
        shift = round_index % len(active)
        for method in active[shift:] + active[:shift]:
            if method.key in failures:
                continue
            call_time, error = time_call(method, model, example)
            if error is None:
                samples[method.key].append(call_time)
            else:
                # A method that failed after the warm-up round gets no times at all.
                failures[method.key] = error
                del samples[method.key]
        progress.log(f"timing: {model.name}, round {round_index + 1} of {repeats} done")
    return ModelTiming(samples, failures, graph_nodes)


def format_microseconds(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def format_timing(timings: dict[str, ModelTiming], repeats: dict[str, int]) -> str:
    rows = []
    speedups = []
    overheads = []
    for model_key, timing in timings.items():
        median_wall = {key: statistics.median(s.wall for s in values) for key, values in timing.samples.items()}
        median_cpu = {key: statistics.median(s.cpu for s in values) for key, values in timing.samples.items()}
        for method in METHODS:
            key = method.key
            if key not in timing.samples:
                rows.append([model_key, method.label, f"failed: {timing.failures[key]}", "", "", "", ""])
                continue
            rows.append([
                model_key,
                method.label,
                format_ms(median_wall[key]),
                format_range_ms([sample.wall for sample in timing.samples[key]]),
                format_ratio(median_wall[key] / median_wall["floor"]),
                format_ms(median_cpu[key]),
                format_ratio(median_cpu[key] / median_cpu["floor"]),
            ])

        def speedup(key: str) -> str:
            return format_ratio(median_wall[key] / median_wall["fxlazy"]) if key in median_wall else "failed"

        speedups.append([model_key, speedup("eager"), speedup("eager-no-grad"), speedup("shape-prop")])
        if "floor-trace" in median_wall:
            overheads.append([
                model_key,
                timing.graph_nodes,
                format_ms(median_wall["fxlazy"]),
                format_ms(median_wall["floor-trace"]),
                format_ratio(median_wall["fxlazy"] / median_wall["floor-trace"]),
                format_microseconds(timing.overhead_per_node_us()),
            ])
        else:
            overheads.append([model_key, timing.graph_nodes, format_ms(median_wall["fxlazy"]), "failed", "n/a", "n/a"])

    rounds = ", ".join(f"{model_key} {repeats[model_key]}" for model_key in timings)
    timing_table = markdown_table(
        rows,
        [
            "model",
            "method",
            "median (ms)",
            "min-max (ms)",
            "median / floor",
            "CPU time, median (ms)",
            "CPU time, median / floor",
        ],
    )
    speedup_table = markdown_table(
        speedups,
        ["model", "eager dry run / fxlazy", "eager dry run, no_grad / fxlazy", "fx ShapeProp / fxlazy"],
    )
    overhead_table = markdown_table(
        overheads,
        [
            "model",
            "graph nodes",
            "fxlazy, median (ms)",
            "floor + symbolic_trace, median (ms)",
            "fxlazy / (floor + symbolic_trace)",
            "overhead per node (µs)",
        ],
    )
    return (
        f"## Time per call\n\nOne process, one warm-up round per model, then round-robin rounds ({rounds}). "
        "Times are wall-clock. CPU time adds up all threads of the process, so it exceeds wall "
        f"time where torch runs kernels on several threads.\n\n{timing_table}\n\n"
        f"Ratio of wall-clock medians, other dry runs to fxlazy:\n\n{speedup_table}\n\n"
        "fxlazy's overhead per node of the graph it returns: (median(fxlazy) - median(floor + "
        "symbolic_trace)) / nodes, from wall-clock medians. A negative overhead means that fxlazy "
        f"was faster than building and tracing the static model.\n\n{overhead_table}\n"
    )
