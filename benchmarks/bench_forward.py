"""The forward stage: the static module from fxlazy against the eagerly materialized model.

The eager model traced by ``torch.fx.symbolic_trace`` runs as a third module. It runs
the eager model's own layers, so its difference from the eager model is what torch.fx's
generated forward costs, for any GraphModule of that graph.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.fx

import fxlazy
from bench_common import ThrottledLog, log_progress, markdown_table, median_and_range_ms
from bench_models import BenchModel

# torch's generator is seeded with this before each of the two modules is built, so that
# both get the same parameters and their outputs can be compared.
FORWARD_SEED = 0
# A sample makes enough calls to last about this long, in seconds. One-call samples of the
# 0.1 s decoders spread by several percent on a shared 2-core machine.
MIN_FORWARD_SAMPLE_SECONDS = 0.3


@dataclass
class ForwardTiming:
    """Forward times of the static module from fxlazy, the eagerly materialized model and its fx trace."""

    calls_per_sample: int
    # Seconds per call, one value per sample. ``traced`` stays empty when
    # torch.fx.symbolic_trace cannot trace the eager model.
    static: list[float] = field(default_factory=list)
    eager: list[float] = field(default_factory=list)
    traced: list[float] = field(default_factory=list)
    outputs_equal: bool = False
    # Largest absolute difference between the two outputs, or None when their shapes differ.
    max_abs_difference: float | None = None

    def slowdown(self) -> float:
        """Return median(static) / median(eager) - 1, which is negative when the static module is faster."""
        return statistics.median(self.static) / statistics.median(self.eager) - 1

    def traced_slowdown(self) -> float | None:
        """Return median(traced) / median(eager) - 1, or None when the eager model was not traced."""
        if not self.traced:
            return None
        return statistics.median(self.traced) / statistics.median(self.eager) - 1


def build_forward_pair(model: BenchModel, example: torch.Tensor) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Return fxlazy's static module and the eagerly materialized model, both seeded alike and in eval mode."""
    torch.manual_seed(FORWARD_SEED)
    static = fxlazy.materialize(model.build(True), example)
    torch.manual_seed(FORWARD_SEED)
    eager = model.build(True)
    eager.eval()
    with torch.no_grad():
        eager(example)
    static.eval()
    return static, eager


def time_forward_sample(module: torch.nn.Module, example: torch.Tensor, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        module(example)
    return (time.perf_counter() - start) / calls


def trace_eager_model(eager: torch.nn.Module) -> torch.nn.Module | None:
    """Return ``torch.fx.symbolic_trace(eager)``, or None when torch.fx cannot trace it."""
    try:
        return torch.fx.symbolic_trace(eager)
    except Exception as error:
        log_progress(f"forward: symbolic_trace of the eager model failed ({type(error).__name__}), so it is not timed")
        return None


def measure_forward(model: BenchModel, example: torch.Tensor, repeats: int) -> ForwardTiming:
    """Compare the outputs of fxlazy's module and the eager model once, then rotate timed samples among three modules."""
    static, eager = build_forward_pair(model, example)
    traced = trace_eager_model(eager)
    with torch.no_grad():
        # These first calls also serve as the warm-up.
        static_output = static(example)
        eager_output = eager(example)
        outputs_equal = torch.equal(static_output, eager_output)
        difference = None
        if static_output.shape == eager_output.shape:
            difference = (static_output - eager_output).abs().max().item()
        del static_output, eager_output
        if not outputs_equal:
            log_progress(f"forward: {model.name}, the outputs of the two modules differ (see the forward table)")

        one_call = time_forward_sample(eager, example, 1)
        calls = max(1, math.ceil(MIN_FORWARD_SAMPLE_SECONDS / one_call))
        timing = ForwardTiming(calls, outputs_equal=outputs_equal, max_abs_difference=difference)
        modules = [(static, timing.static), (eager, timing.eager)]
        if traced is not None:
            traced(example)
            modules.append((traced, timing.traced))
        progress = ThrottledLog()
        for round_index in range(repeats):
            # Rotate which module goes first, so that none always runs after the same one.
            shift = round_index % len(modules)
            order = modules[shift:] + modules[:shift]
            for module, samples in order:
                samples.append(time_forward_sample(module, example, calls))
            progress.log(f"forward: {model.name}, round {round_index + 1} of {repeats} done")
    return timing


def format_forward(results: dict[str, ForwardTiming], repeats: dict[str, int]) -> str:
    rows = []
    for model_key, timing in results.items():
        if timing.outputs_equal:
            equal = "yes"
        elif timing.max_abs_difference is None:
            equal = "no, shapes differ"
        else:
            equal = f"no, max abs difference {timing.max_abs_difference:.3g}"
        traced_slowdown = timing.traced_slowdown()
        rows.append([
            model_key,
            repeats[model_key],
            timing.calls_per_sample,
            *median_and_range_ms(timing.static),
            *median_and_range_ms(timing.eager),
            *median_and_range_ms(timing.traced),
            f"{timing.slowdown():+.1%}",
            "n/a" if traced_slowdown is None else f"{traced_slowdown:+.1%}",
            equal,
        ])
    table = markdown_table(
        rows,
        [
            "model",
            "samples",
            "calls per sample",
            "static, median (ms per call)",
            "min-max (ms)",
            "eager, median (ms per call)",
            "min-max (ms)",
            "fx-traced eager, median (ms per call)",
            "min-max (ms)",
            "static / eager - 1",
            "fx-traced eager / eager - 1",
            "outputs equal (torch.equal)",
        ],
    )
    return (
        "## Forward\n\nThe static module from fxlazy against the eagerly materialized model (a lazy "
        f"model after one forward under no_grad), both built after torch.manual_seed({FORWARD_SEED}) "
        "and in eval mode. Both run once as a warm-up, which also compares their outputs, then "
        "timed samples alternate between them, under torch.no_grad(). A third module, the eager model "
        "traced by torch.fx.symbolic_trace, runs the eager model's own layers through torch.fx's "
        "generated forward and takes its turn in the same rounds. A sample makes enough calls to "
        f"last about {MIN_FORWARD_SAMPLE_SECONDS * 1000:.0f} ms, judged from one more eager call after "
        "the warm-up, and reports the time per call. A positive difference means that the static "
        f"(or traced) module was slower.\n\n{table}\n"
    )
