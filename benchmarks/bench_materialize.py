"""Benchmark fxlazy.materialize against an eager dry run, torch.fx ShapeProp and the static model.

This script parses the command line, runs the stages and prints the results. The models
are in bench_models.py next to it, the methods in bench_methods.py, and each stage in a
bench_<stage>.py module. Every method builds its model from scratch, so building the
model is part of the measured work:

- ``fxlazy``: ``fxlazy.materialize(build(lazy=True), example)``.
- ``eager dry run``: build the lazy model, ``model.eval()``, ``model(example)`` in the
  default grad mode, so autograd keeps the activations for a backward pass.
- ``eager dry run, no_grad``: the same under ``torch.no_grad()``.
- ``fx ShapeProp``: build the lazy model, ``model.eval()``, ``torch.fx.symbolic_trace`` it
  (lazy layers are torch.nn modules, so they stay leaves), then
  ``ShapeProp(gm).propagate(example)`` under ``torch.no_grad()``. This runs the real
  forward, and the lazy layers initialize themselves in their forward pre-hooks.
- ``floor``: ``build(lazy=False)``, the same architecture from concrete layers. It
  allocates and initializes the same parameters and does nothing else, which makes it the
  floor for any method that produces them.
- ``floor + symbolic_trace``: ``torch.fx.symbolic_trace(build(lazy=False))``. fxlazy returns
  a traced GraphModule, so this is the floor for a method that also traces.

Stages (``--stages``):

- timing: in this process, per model, one warm-up round, then rounds that call each
  method once, rotating which method goes first. ``gc.collect()`` runs before each call,
  and the clock (``time.perf_counter``) stops before the call's results are freed.
- memory: each method of each model runs in fresh subprocesses (this script with a
  hidden flag), one subprocess at a time: once as the process's first call, and once
  after a warm-up on two small models. The extra peak is the subprocess's peak RSS
  (VmHWM) after the call minus its peak RSS before it.
- cold-start: fresh subprocesses (cold_start_child.py) time ``import torch``, ``import
  fxlazy`` and the first and second materialize calls, and record the modules that the
  first call imports.
- forward: per model, the static module from fxlazy against an eagerly materialized
  model and that model traced by ``torch.fx.symbolic_trace``, calls rotating among the
  three under ``torch.no_grad()``.
- profile: cProfile over warm materialize calls, averaged per call.

Results are printed as Markdown tables, starting with the goals of the performance work
and whether this run met them, then the command line and the machine.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import fxlazy
import fxlazy.passes

# Running this script by path puts its folder on sys.path, but `python -m` from the
# repository root does not, and the bench_* modules next to it must be importable.
BENCHMARK_DIR = Path(__file__).resolve().parent
if str(BENCHMARK_DIR) not in sys.path:
    sys.path.insert(0, str(BENCHMARK_DIR))

# The imports below need the sys.path entry above.
from bench_cold_start import ColdStart, format_cold_start, measure_cold_start  # noqa: E402
from bench_common import (  # noqa: E402
    count_noun,
    format_ms,
    format_ratio,
    log_progress,
    markdown_table,
)
from bench_forward import ForwardTiming, format_forward, measure_forward  # noqa: E402
from bench_memory import MemoryResults, format_memory, measure_memory, measure_memory_in_child, memory_ratio  # noqa: E402
from bench_methods import METHODS  # noqa: E402
from bench_models import MODELS  # noqa: E402
from bench_proc import read_proc_field  # noqa: E402
from bench_profile import profile_materialize  # noqa: E402
from bench_timing import ModelTiming, format_microseconds, format_timing, time_round_robin  # noqa: E402

STAGES = ("timing", "memory", "cold-start", "forward", "profile")
# Models of the cold-start and profile stages when their options are not given. Only those
# among --models run, and when none of them is, the first of --models runs instead.
DEFAULT_COLD_START_MODELS = ("decoder-256", "resnet")
DEFAULT_PROFILE_MODELS = ("decoder-256", "tiny-2000")

# Goals of the performance work. Time ratios compare wall-clock medians of the timing stage.
MAX_TIME_VS_FLOOR = 1.5
# The goal names the decoders and the wide MLP. The decoders here have a 512-channel
# input, whose floor matches the 17 ms the goal was set against. decoder-256-c256 is kept
# for comparison with older runs and is reported in the tables, not judged.
TIME_VS_FLOOR_MODELS = ("decoder-256", "decoder-1024", "mlp-wide")
MAX_TIME_VS_TRACED_FLOOR = 1.5
DEEP_MODEL = "tiny-2000"
MIN_SPEEDUP_OVER_EAGER = {"decoder-256": 8.0, "decoder-1024": 200.0}
MAX_MEMORY_VS_FLOOR = 1.1
MAX_COLD_START_SECONDS = 0.1
# A static forward that is faster than the eager one meets the goal too.
MAX_FORWARD_SLOWDOWN = 0.02


# Goals.


@dataclass(frozen=True)
class GoalCheck:
    """One model's measured value for a goal, and whether it meets the goal."""

    model: str
    measured: str
    # None when this run gives no verdict, because it did not measure the value or the value is undefined.
    met: bool | None


def not_measured(model: str) -> GoalCheck:
    return GoalCheck(model, "not measured", None)


@dataclass
class Results:
    """Measurements of every stage, with None for a stage that did not run."""

    timing: dict[str, ModelTiming] | None = None
    memory: MemoryResults | None = None
    cold_start: dict[str, ColdStart] | None = None
    forward: dict[str, ForwardTiming] | None = None


def check_time_vs_floor(results: Results) -> list[GoalCheck]:
    checks = []
    for model_key in TIME_VS_FLOOR_MODELS:
        timing = (results.timing or {}).get(model_key)
        if timing is None:
            checks.append(not_measured(model_key))
            continue
        ratio = timing.median_wall("fxlazy") / timing.median_wall("floor")
        checks.append(GoalCheck(model_key, format_ratio(ratio), ratio <= MAX_TIME_VS_FLOOR))
    return checks


def check_deep_model(results: Results) -> list[GoalCheck]:
    timing = (results.timing or {}).get(DEEP_MODEL)
    if timing is None:
        return [not_measured(DEEP_MODEL)]
    traced_floor_median = timing.median_wall("floor-trace")
    if traced_floor_median is None:
        return [GoalCheck(DEEP_MODEL, "floor + symbolic_trace failed", None)]
    ratio = timing.median_wall("fxlazy") / traced_floor_median
    per_node = format_microseconds(timing.overhead_per_node_us())
    measured = f"{format_ratio(ratio)}, overhead {per_node} µs per node ({timing.graph_nodes} nodes)"
    return [GoalCheck(DEEP_MODEL, measured, ratio <= MAX_TIME_VS_TRACED_FLOOR)]


def check_speedup_over_eager(results: Results) -> list[GoalCheck]:
    checks = []
    for model_key, minimum in MIN_SPEEDUP_OVER_EAGER.items():
        timing = (results.timing or {}).get(model_key)
        if timing is None:
            checks.append(not_measured(model_key))
            continue
        speedup = timing.median_wall("eager") / timing.median_wall("fxlazy")
        checks.append(GoalCheck(model_key, format_ratio(speedup), speedup >= minimum))
    return checks


def check_memory(results: Results, model_keys: Sequence[str]) -> list[GoalCheck]:
    """Judge each model by the warmed-up call, and show the first call's ratio beside it.

    The first call in a process also pays for allocations made once per process, which
    the cold-start goal covers, while the goal is about what a materialization costs.
    """
    checks = []
    for model_key in model_keys:
        if results.memory is None or model_key not in results.memory.warm:
            checks.append(not_measured(model_key))
            continue
        warm = memory_ratio(results.memory.warm[model_key], "fxlazy")
        cold = memory_ratio(results.memory.cold[model_key], "fxlazy")
        if warm is None or cold is None:
            measured = "n/a (a method failed, or the floor's extra peak was not positive)"
            checks.append(GoalCheck(model_key, measured, None))
            continue
        measured = f"{format_ratio(warm)} (first call in a process: {format_ratio(cold)})"
        checks.append(GoalCheck(model_key, measured, warm <= MAX_MEMORY_VS_FLOOR))
    return checks


def check_cold_start(results: Results, model_keys: Sequence[str]) -> list[GoalCheck]:
    checks = []
    for model_key in model_keys:
        cold_start = (results.cold_start or {}).get(model_key)
        if cold_start is None:
            checks.append(not_measured(model_key))
            continue
        added = statistics.median(cold_start.added_seconds())
        checks.append(GoalCheck(model_key, f"{format_ms(added)} ms", added <= MAX_COLD_START_SECONDS))
    return checks


def check_forward(results: Results, model_keys: Sequence[str]) -> list[GoalCheck]:
    checks = []
    for model_key in model_keys:
        timing = (results.forward or {}).get(model_key)
        if timing is None:
            checks.append(not_measured(model_key))
            continue
        slowdown = timing.slowdown()
        checks.append(GoalCheck(model_key, f"{slowdown:+.1%}", slowdown <= MAX_FORWARD_SLOWDOWN))
    return checks


def summarize_goal(goal: str, checks: Sequence[GoalCheck]) -> list[str]:
    measured = "; ".join(f"{check.model}: {check.measured}" for check in checks)
    verdicts = [check.met for check in checks]
    if False in verdicts:
        status = "not met"
    elif None not in verdicts:
        status = "met"
    elif True in verdicts:
        status = "met where measured"
    else:
        status = "not measured"
    return [goal, measured, status]


def format_goals(results: Results, arguments: argparse.Namespace) -> str:
    rows = [
        summarize_goal(
            f"fxlazy within {MAX_TIME_VS_FLOOR:g}x of the floor in time (median fxlazy / floor)",
            check_time_vs_floor(results),
        ),
        summarize_goal(
            f"fxlazy within {MAX_TIME_VS_TRACED_FLOOR:g}x of floor + symbolic_trace on the "
            "2,000-layer model, with the overhead per graph node",
            check_deep_model(results),
        ),
        summarize_goal(
            "fxlazy faster than the eager dry run by at least "
            + " and ".join(f"{minimum:g}x on {model_key}" for model_key, minimum in MIN_SPEEDUP_OVER_EAGER.items())
            + " (median eager dry run / fxlazy)",
            check_speedup_over_eager(results),
        ),
        summarize_goal(
            f"fxlazy's extra peak memory within {MAX_MEMORY_VS_FLOOR:g}x of the floor's",
            check_memory(results, arguments.models),
        ),
        summarize_goal(
            f"import fxlazy + first materialize in a fresh process at most {MAX_COLD_START_SECONDS:g} s (median)",
            check_cold_start(results, arguments.cold_models),
        ),
        summarize_goal(
            f"static module's forward at most {MAX_FORWARD_SLOWDOWN:.0%} slower than the eager model's "
            "(median static / eager - 1)",
            check_forward(results, arguments.models),
        ),
    ]
    table = markdown_table(rows, ["goal", "measured", "status"])
    return (
        "## Goals\n\nTime goals compare wall-clock medians of the timing stage. The sections below "
        "give the min-max and the CPU times behind each value. \"met where measured\" means that "
        f"every value this run measured meets the goal, but some were not measured.\n\n{table}\n"
    )


# Environment and command line.


def fxlazy_source_digest() -> str:
    """Return a SHA-256 prefix over the Python files of fxlazy and fxlazy.passes, as they are on disk now."""
    digest = hashlib.sha256()
    for package_dir in (Path(fxlazy.__file__).parent, Path(fxlazy.passes.__file__).parent):
        for path in sorted(package_dir.glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def describe_fxlazy_source() -> str:
    """Return the git commit of the fxlazy checkout and whether fxlazy/ or passes/ differ from it."""
    repository = Path(fxlazy.__file__).resolve().parent.parent
    # --no-optional-locks keeps git status from rewriting the index of a checkout in use.
    git = ["git", "--no-optional-locks", "-C", str(repository)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--", "fxlazy", "passes"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    state = "with uncommitted changes in fxlazy/ or passes/" if changes.stdout.strip() else "clean"
    return f"commit {commit.stdout.strip()}, {state}"


def format_load_average() -> str:
    """Format the 1, 5 and 15 minute load averages, which show whether other processes shared the cores."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def describe_environment() -> str:
    memory = read_proc_field("/proc/meminfo", "MemTotal")
    memory_text = f"{int(memory.split()[0]) / 1024**2:.1f} GiB" if memory else "unknown"
    rows = [
        ["command", f"`{shlex.join(['python', *sys.argv])}`"],
        ["torch", torch.__version__],
        ["fxlazy", f"{fxlazy.__version__}, {describe_fxlazy_source()}"],
        ["fxlazy source digest", fxlazy_source_digest()],
        ["Python", platform.python_version()],
        ["CPU", read_proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"],
        ["cores", f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by this process)"],
        ["torch threads", torch.get_num_threads()],
        ["memory", memory_text],
        ["load average at start (1, 5, 15 min)", format_load_average()],
    ]
    return "## Environment\n\n" + markdown_table(rows, ["item", "value"]) + "\n"


def describe_models(arguments: argparse.Namespace) -> str:
    rows = [
        [
            model_key,
            MODELS[model_key].description,
            arguments.repeats or MODELS[model_key].repeats,
            arguments.forward_repeats or MODELS[model_key].forward_repeats,
        ]
        for model_key in arguments.models
    ]
    table = markdown_table(rows, ["model", "architecture and input", "timing rounds", "forward samples"])
    return f"## Models\n\n{table}\n"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def describe_range(values: Iterable[int]) -> str:
    ordered = sorted(set(values))
    return f"{ordered[0]} to {ordered[-1]}" if len(ordered) > 1 else str(ordered[0])


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time fxlazy.materialize against an eager dry run, torch.fx ShapeProp and building the "
            "static model directly, and measure peak memory, the cold first call and the static "
            "module's forward. Prints Markdown tables."
        ),
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        metavar="MODEL",
        help=f"models to measure, defined in bench_models.py: {', '.join(MODELS)} (default: all)",
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="measurements to run (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        metavar="N",
        help=(
            "timed round-robin rounds per model after one warm-up round "
            f"(default: each model's own, {describe_range(model.repeats for model in MODELS.values())})"
        ),
    )
    parser.add_argument(
        "--forward-repeats",
        type=positive_int,
        metavar="N",
        help=(
            "timed samples per module in the forward stage "
            f"(default: each model's own, {describe_range(model.forward_repeats for model in MODELS.values())})"
        ),
    )
    parser.add_argument(
        "--cold-models",
        nargs="+",
        choices=list(MODELS),
        metavar="MODEL",
        help=(
            "models for the cold-start stage (default: those of "
            f"{', '.join(DEFAULT_COLD_START_MODELS)} among --models, else the first of --models)"
        ),
    )
    parser.add_argument(
        "--cold-repeats",
        type=positive_int,
        metavar="N",
        default=3,
        help="fresh processes per model for the cold-start stage (default: %(default)s)",
    )
    parser.add_argument(
        "--profile-models",
        nargs="+",
        choices=list(MODELS),
        metavar="MODEL",
        help=(
            "models for the profile stage (default: those of "
            f"{', '.join(DEFAULT_PROFILE_MODELS)} among --models, else the first of --models)"
        ),
    )
    parser.add_argument(
        "--profile-calls",
        type=positive_int,
        metavar="N",
        default=10,
        help="warm materialize calls that the profile stage averages over, per model (default: %(default)s)",
    )
    parser.add_argument(
        "--profile-top",
        type=positive_int,
        metavar="N",
        default=10,
        help="rows in each profile table (default: %(default)s)",
    )
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write the Markdown results to this file")
    # A hidden flag that runs one memory measurement in a fresh subprocess and prints JSON.
    parser.add_argument("--child-memory", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--child-memory-warm", action="store_true", help=argparse.SUPPRESS)

    arguments = parser.parse_args(argv)
    arguments.models = list(dict.fromkeys(arguments.models))
    if arguments.cold_models is None:
        arguments.cold_models = pick_default_models(DEFAULT_COLD_START_MODELS, arguments.models)
    if arguments.profile_models is None:
        arguments.profile_models = pick_default_models(DEFAULT_PROFILE_MODELS, arguments.models)
    return arguments


def pick_default_models(defaults: Sequence[str], selected: Sequence[str]) -> list[str]:
    """Return the models of ``defaults`` that are in ``selected``, or the first selected model if there are none."""
    return [model_key for model_key in defaults if model_key in selected] or [selected[0]]


def run_child_mode(arguments: argparse.Namespace) -> bool:
    """Run the measurement that the hidden flag requests, print its JSON and return whether one ran."""
    if not arguments.child_memory:
        return False
    model_key, method_key = arguments.child_memory
    print(json.dumps(measure_memory_in_child(model_key, method_key, arguments.child_memory_warm)))
    return True


def log_plan(arguments: argparse.Namespace) -> None:
    """Log which stages will run on which models, so that a long run shows what is left."""
    log_progress(f"models: {', '.join(arguments.models)}; stages: {', '.join(arguments.stages)}")
    if "timing" in arguments.stages:
        rounds = ", ".join(f"{key} {arguments.repeats or MODELS[key].repeats}" for key in arguments.models)
        log_progress(f"timing: {len(METHODS)} methods, one warm-up round and then rounds per model: {rounds}")
    if "memory" in arguments.stages:
        log_progress(f"memory: {2 * len(METHODS) * len(arguments.models)} subprocesses, one at a time")
    if "cold-start" in arguments.stages:
        log_progress(
            f"cold start: {', '.join(arguments.cold_models)}, "
            f"{count_noun(arguments.cold_repeats, 'process', 'processes')} each, "
            "twice as many if the first call imports modules"
        )
    if "forward" in arguments.stages:
        samples = ", ".join(
            f"{key} {arguments.forward_repeats or MODELS[key].forward_repeats}" for key in arguments.models
        )
        log_progress(f"forward: samples per module: {samples}")
    if "profile" in arguments.stages:
        log_progress(f"profile: {', '.join(arguments.profile_models)}, {arguments.profile_calls} calls each")


def run_stages(arguments: argparse.Namespace) -> list[str]:
    """Run the requested stages and return the Markdown sections, the goals first."""
    sections = [describe_environment(), describe_models(arguments)]
    digest_at_start = fxlazy_source_digest()
    results = Results()
    log_plan(arguments)

    if "timing" in arguments.stages:
        repeats = {key: arguments.repeats or MODELS[key].repeats for key in arguments.models}
        results.timing = {}
        for model_key in arguments.models:
            model = MODELS[model_key]
            results.timing[model_key] = time_round_robin(model, model.make_example(), repeats[model_key])
        sections.append(format_timing(results.timing, repeats))

    if "memory" in arguments.stages:
        results.memory = measure_memory(arguments.models)
        sections.append(format_memory(results.memory))

    if "cold-start" in arguments.stages:
        results.cold_start = measure_cold_start(arguments.cold_models, arguments.cold_repeats)
        sections.append(format_cold_start(results.cold_start))

    if "forward" in arguments.stages:
        repeats = {key: arguments.forward_repeats or MODELS[key].forward_repeats for key in arguments.models}
        results.forward = {}
        for model_key in arguments.models:
            log_progress(f"forward: {model_key}, {count_noun(repeats[model_key], 'sample', 'samples')} per module")
            model = MODELS[model_key]
            results.forward[model_key] = measure_forward(model, model.make_example(), repeats[model_key])
            gc.collect()
        sections.append(format_forward(results.forward, repeats))

    if "profile" in arguments.stages:
        for model_key in arguments.profile_models:
            log_progress(f"profile: {model_key}, {count_noun(arguments.profile_calls, 'call', 'calls')}")
            model = MODELS[model_key]
            sections.append(
                profile_materialize(model, model.make_example(), arguments.profile_calls, arguments.profile_top)
            )

    # The timing, forward and profile stages run the code imported at start, while each
    # subprocess imports the files on disk when it starts. An edit during the run mixes two versions.
    sections.append(f"Load average at the end (1, 5 and 15 minutes): {format_load_average()}.\n")
    digest_at_end = fxlazy_source_digest()
    if digest_at_end != digest_at_start:
        sections.append(
            f"**Warning:** fxlazy's source changed during the run (digest {digest_at_start} at start, "
            f"{digest_at_end} at the end), so the stages may have measured different code. Run again.\n"
        )
    return ["# fxlazy.materialize benchmark\n", format_goals(results, arguments), *sections]


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if run_child_mode(arguments):
        return
    if "memory" in arguments.stages and sys.platform != "linux":
        sys.exit(
            "error: the memory stage reads peak RSS from Linux's /proc/self/status, so leave memory out of --stages"
        )

    text = "\n".join(run_stages(arguments))
    print(text)
    if arguments.output:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text)
        log_progress(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
