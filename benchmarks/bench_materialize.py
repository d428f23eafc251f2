"""Benchmark fxlazy.materialize against an eager dry run and against building the static model.

Models: ``fxlazy.examples.UpsamplingDecoder`` with output sides 256 and 1024, fed a batch
of 8 (``model.example_input(batch=8)``). Every method builds its own model from scratch,
so building the model is part of the measured work:

- ``fxlazy``: ``fxlazy.materialize(UpsamplingDecoder(size, lazy=True), x)``.
- ``eager dry run``: build the lazy model, ``model.eval()``, ``model(x)`` in the default
  grad mode, so autograd keeps the activations for a backward pass.
- ``eager dry run, no_grad``: the same under ``torch.no_grad()``.
- ``floor``: ``UpsamplingDecoder(size, lazy=False)``, the same architecture built from
  concrete layers. It allocates and initializes the same parameters and does nothing
  else, which makes it the floor for any method that produces them.

Stages (``--stages``):

- timing: in this process, one warm-up round, then ``--repeats`` rounds that call each
  method once, rotating which method goes first. ``gc.collect()`` runs before each call,
  and the clock (``time.perf_counter``) stops before the call's results are freed.
  Reports the median and min-max per method, median(method) / median(floor), and
  median(eager dry run) / median(fxlazy).
- memory: each method runs once in a fresh subprocess (this script with a hidden flag).
  The extra peak is the subprocess's peak RSS after the call minus its peak RSS before
  the call, read after importing torch and fxlazy and building the example input. Peak
  RSS is VmHWM from /proc/self/status (see ``peak_rss_kib`` for why not ru_maxrss).
- cold start: in a fresh subprocess that has imported torch and fxlazy, times the first
  materialize call and then a second one, ``--cold-repeats`` processes per model, and
  records the modules that the first call imports. Then times the first call again in
  processes that import those modules beforehand, and measures importing them alone.
- profile: cProfile over ``--profile-calls`` warm ``materialize`` calls on
  ``--profile-model``, averaged per call.

Results are printed as Markdown tables, with the command line and the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import importlib
import json
import os
import platform
import pstats
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

import fxlazy
import fxlazy.passes
from fxlazy.examples import UpsamplingDecoder

MODEL_SIZES = {"decoder-256": 256, "decoder-1024": 1024}
BATCH = 8
STAGES = ("timing", "memory", "cold-start", "profile")
# The cold-start stage names at most this many packages among the modules a first call imports.
MAX_PACKAGES_SHOWN = 4


# Methods. Each builds its model from scratch and returns what it created, so the caller
# can stop the clock before the results are freed.


def run_fxlazy(size: int, example: torch.Tensor) -> Any:
    return fxlazy.materialize(UpsamplingDecoder(size, lazy=True), example)


def run_eager_dry_run(size: int, example: torch.Tensor) -> Any:
    model = UpsamplingDecoder(size, lazy=True)
    model.eval()
    output = model(example)
    return model, output


def run_eager_dry_run_no_grad(size: int, example: torch.Tensor) -> Any:
    model = UpsamplingDecoder(size, lazy=True)
    model.eval()
    with torch.no_grad():
        output = model(example)
    return model, output


def run_floor(size: int, example: torch.Tensor) -> Any:
    return UpsamplingDecoder(size, lazy=False)


@dataclass(frozen=True)
class Method:
    """A measured way to get the model with initialized parameters.

    ``key`` names the method in the hidden subprocess flags, ``label`` in the tables.
    """

    key: str
    label: str
    run: Callable[[int, torch.Tensor], Any]


METHODS = (
    Method("fxlazy", "fxlazy", run_fxlazy),
    Method("eager", "eager dry run", run_eager_dry_run),
    Method("eager-no-grad", "eager dry run, no_grad", run_eager_dry_run_no_grad),
    Method("floor", "floor", run_floor),
)
METHODS_BY_KEY = {method.key: method for method in METHODS}


def build_example(size: int) -> torch.Tensor:
    return UpsamplingDecoder(size).example_input(batch=BATCH)


# Small helpers shared by the stages.


def read_proc_field(path: str, field: str) -> str | None:
    try:
        with open(path) as file:
            for line in file:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        return None
    return None


def peak_rss_kib() -> int:
    """Return this process's peak resident set size in KiB, read from VmHWM in /proc/self/status.

    ru_maxrss from resource.getrusage would be the usual source, but Linux keeps it across
    execve (getrusage(2)). A subprocess that this script starts after the timing stage
    would then report this script's own peak, a few GiB after the 1024 eager dry run.
    VmHWM covers only the subprocess's own address space, which starts empty at execve.
    """
    value = read_proc_field("/proc/self/status", "VmHWM")
    if value is None:
        raise RuntimeError(
            "VmHWM is missing from /proc/self/status. The memory stage needs Linux's procfs, "
            "so leave memory out of --stages on this system."
        )
    return int(value.split()[0])


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


def markdown_table(rows: list[list[Any]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def run_child(arguments: list[str]) -> dict[str, Any]:
    """Run this script in a fresh Python process with a hidden flag and return its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(
            f"Benchmark subprocess {shlex.join(command)} failed with exit status "
            f"{completed.returncode}. Its stderr ends with:\n{completed.stderr[-3000:]}"
        )
    # The result is the last stdout line, because torch may print warnings before it.
    return json.loads(completed.stdout.strip().splitlines()[-1])


def log_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Timing stage.


@dataclass(frozen=True)
class CallTime:
    """Wall-clock and CPU seconds of one call."""

    wall: float
    # CPU time of all threads of this process (time.process_time). Unlike wall time, it
    # does not count time spent waiting for a core, so it suffers less from other processes.
    cpu: float


def time_call(method: Method, size: int, example: torch.Tensor) -> CallTime:
    gc.collect()
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    result = method.run(size, example)
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - wall_start
    del result
    return CallTime(wall, cpu)


def time_round_robin(size: int, example: torch.Tensor, repeats: int) -> dict[str, list[CallTime]]:
    """Return each method's call times, from ``repeats`` rounds after one warm-up round."""
    for method in METHODS:
        time_call(method, size, example)

    samples: dict[str, list[CallTime]] = {method.key: [] for method in METHODS}
    for round_index in range(repeats):
        shift = round_index % len(METHODS)
        for method in METHODS[shift:] + METHODS[:shift]:
            samples[method.key].append(time_call(method, size, example))
    return samples


def format_timing(samples_by_model: dict[str, dict[str, list[CallTime]]], repeats: int) -> str:
    rows = []
    speedups = []
    for model_key, samples in samples_by_model.items():
        walls = {key: [sample.wall for sample in values] for key, values in samples.items()}
        cpus = {key: [sample.cpu for sample in values] for key, values in samples.items()}
        median_wall = {key: statistics.median(values) for key, values in walls.items()}
        median_cpu = {key: statistics.median(values) for key, values in cpus.items()}
        for method in METHODS:
            key = method.key
            rows.append([
                model_key,
                method.label,
                format_ms(median_wall[key]),
                format_range_ms(walls[key]),
                format_ratio(median_wall[key] / median_wall["floor"]),
                format_ms(median_cpu[key]),
                format_ratio(median_cpu[key] / median_cpu["floor"]),
            ])
        speedups.append([
            model_key,
            format_ratio(median_wall["eager"] / median_wall["fxlazy"]),
            format_ratio(median_wall["eager-no-grad"] / median_wall["fxlazy"]),
        ])

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
        speedups, ["model", "eager dry run / fxlazy", "eager dry run, no_grad / fxlazy"]
    )
    return (
        f"## Time per call\n\nOne process, one warm-up round, then {repeats} round-robin rounds. "
        "Times are wall-clock. CPU time adds up all threads of the process, so it exceeds wall "
        f"time where torch runs kernels on several threads.\n\n{timing_table}\n\n"
        f"Ratio of wall-clock medians, eager dry run to fxlazy:\n\n{speedup_table}\n"
    )


# Memory stage.


def measure_memory_in_child(model_key: str, method_key: str) -> dict[str, Any]:
    size = MODEL_SIZES[model_key]
    example = build_example(size)
    gc.collect()
    baseline_kib = peak_rss_kib()
    result = METHODS_BY_KEY[method_key].run(size, example)
    peak_kib = peak_rss_kib()
    del result
    return {"baseline_kib": baseline_kib, "peak_kib": peak_kib}


def measure_memory(model_keys: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Run each method of each model once, each in its own subprocess."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for model_key in model_keys:
        results[model_key] = {}
        for method in METHODS:
            log_progress(f"memory: {model_key}, {method.label}")
            results[model_key][method.key] = run_child(["--child-memory", model_key, method.key])
    return results


def extra_mib(result: dict[str, Any]) -> float:
    return (result["peak_kib"] - result["baseline_kib"]) / 1024


def format_memory(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = []
    for model_key, by_method in results.items():
        floor_extra = extra_mib(by_method["floor"])
        for method in METHODS:
            result = by_method[method.key]
            extra = extra_mib(result)
            ratio = format_ratio(extra / floor_extra) if floor_extra > 0 else "n/a"
            rows.append([model_key, method.label, f"{extra:.0f}", ratio, f"{result['baseline_kib'] / 1024:.0f}"])

    table = markdown_table(
        rows, ["model", "method", "extra peak RSS (MiB)", "extra / floor's extra", "peak RSS after imports (MiB)"]
    )
    return (
        "## Peak memory\n\nEach method once, in its own fresh process. Extra peak RSS is the "
        "process's peak RSS (VmHWM) after the call minus its peak RSS after importing torch and "
        "fxlazy.\n\n"
        f"{table}\n"
    )


# Cold-start stage.


def measure_cold_start_in_child(model_key: str, preimport: Sequence[str]) -> dict[str, Any]:
    """Time the first and second materialize calls and list the modules the first call imported.

    The modules in ``preimport`` are imported before anything is timed.
    """
    for name in preimport:
        importlib.import_module(name)
    size = MODEL_SIZES[model_key]
    example = build_example(size)

    modules_before = set(sys.modules)
    first_seconds = time_call(METHODS_BY_KEY["fxlazy"], size, example).wall
    imported = [name for name in sys.modules if name not in modules_before]
    second_seconds = time_call(METHODS_BY_KEY["fxlazy"], size, example).wall
    return {"first_seconds": first_seconds, "second_seconds": second_seconds, "imported": imported}


def measure_import_in_child(module_names: Sequence[str]) -> dict[str, Any]:
    """Measure the time and the extra peak RSS of importing ``module_names``, in this order."""
    baseline_kib = peak_rss_kib()
    start = time.perf_counter()
    for name in module_names:
        importlib.import_module(name)
    seconds = time.perf_counter() - start
    return {"baseline_kib": baseline_kib, "peak_kib": peak_rss_kib(), "seconds": seconds}


@dataclass
class ColdStart:
    """The cold-start measurements of one model."""

    runs: list[dict[str, Any]]
    # Modules that the first call imported in any run, in the order they were imported.
    imported: list[str]
    # Runs that imported ``imported`` before the first call.
    preimported_runs: list[dict[str, Any]]
    # Time and peak RSS of importing ``imported`` alone, or None when nothing was imported.
    import_alone: dict[str, Any] | None


def measure_cold_start(model_keys: Sequence[str], processes: int) -> dict[str, ColdStart]:
    results: dict[str, ColdStart] = {}
    for model_key in model_keys:
        log_progress(f"cold start: {model_key}, {processes} processes")
        runs = [run_child(["--child-cold-start", model_key]) for _ in range(processes)]
        imported = list(dict.fromkeys(name for run in runs for name in run["imported"]))

        preimported_runs: list[dict[str, Any]] = []
        import_alone = None
        if imported:
            names = ",".join(imported)
            log_progress(f"cold start: {model_key}, {processes} processes with {len(imported)} modules imported first")
            preimported_runs = [
                run_child(["--child-cold-start", model_key, "--child-preimport", names]) for _ in range(processes)
            ]
            import_alone = run_child(["--child-import", names])
        results[model_key] = ColdStart(runs, imported, preimported_runs, import_alone)
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


def median_and_range_ms(runs: Sequence[dict[str, Any]], field: str) -> list[str]:
    if not runs:
        return ["n/a", "n/a"]
    values = [run[field] for run in runs]
    return [format_ms(statistics.median(values)), format_range_ms(values)]


def format_cold_start(results: dict[str, ColdStart]) -> str:
    time_rows = []
    import_rows = []
    for model_key, cold_start in results.items():
        time_rows.append([
            model_key,
            len(cold_start.runs),
            *median_and_range_ms(cold_start.runs, "first_seconds"),
            *median_and_range_ms(cold_start.preimported_runs, "first_seconds"),
            *median_and_range_ms(cold_start.runs, "second_seconds"),
        ])
        if cold_start.import_alone is not None:
            import_rows.append([
                model_key,
                len(cold_start.imported),
                summarize_packages(cold_start.imported),
                format_ms(cold_start.import_alone["seconds"]),
                f"{extra_mib(cold_start.import_alone):.0f}",
            ])

    time_table = markdown_table(
        time_rows,
        [
            "model",
            "processes",
            "first call, median (ms)",
            "min-max (ms)",
            "first call, modules imported before, median (ms)",
            "min-max (ms)",
            "second call, median (ms)",
            "min-max (ms)",
        ],
    )
    text = (
        "## Cold start\n\nFresh processes that have imported torch and fxlazy call materialize twice, "
        "building the lazy model each time. The second group of processes first imports the modules "
        f"that the first call imported in the first group.\n\n{time_table}\n"
    )
    if import_rows:
        import_table = markdown_table(
            import_rows,
            ["model", "modules", "main packages (modules)", "import alone (ms)", "import alone, extra peak RSS (MiB)"],
        )
        text += f"\nModules that the first call imported, and importing them alone in a fresh process:\n\n{import_table}\n"
    else:
        text += "\nThe first call imported no modules.\n"
    return text


# Profile stage.


@dataclass(frozen=True)
class ProfiledFunction:
    """One function's cProfile totals, divided by the number of profiled materialize calls."""

    key: tuple[str, int, str]  # pstats' (file name, line, function name)
    calls: float
    own: float
    cumulative: float


def describe_function(key: tuple[str, int, str], package_dirs: Sequence[Path]) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    path = Path(filename)
    for package_dir in package_dirs:
        if path.is_relative_to(package_dir):
            return f"{package_dir.name}/{path.relative_to(package_dir)}:{line} {name}"
    parts = path.parts
    if "site-packages" in parts:
        return f"{Path(*parts[parts.index('site-packages') + 1:])}:{line} {name}"
    return f"{path.name}:{line} {name}"


def profile_materialize(size: int, example: torch.Tensor, calls: int, top: int) -> str:
    """Profile ``calls`` warm materialize calls and tabulate fxlazy's functions and the top own-time functions.

    Times are per call, averaged over the calls, so that one call preempted by another
    process weighs less.
    """
    # The warm-up call keeps the one-time imports out of the profile.
    run_fxlazy(size, example)
    profiler = cProfile.Profile()
    for _ in range(calls):
        gc.collect()
        profiler.enable()
        result = run_fxlazy(size, example)
        profiler.disable()
        del result

    stats = pstats.Stats(profiler)
    total = stats.total_tt / calls
    # passes/ comes first because in an installed fxlazy it is a folder inside fxlazy/.
    package_dirs = [Path(fxlazy.passes.__file__).parent, Path(fxlazy.__file__).parent]
    functions = [
        ProfiledFunction(key, count / calls, own / calls, cumulative / calls)
        # pstats stores (primitive calls, calls, own time, cumulative time, callers) per function.
        for key, (_, count, own, cumulative, _) in stats.stats.items()
    ]
    fxlazy_functions = [
        function for function in functions if any(Path(function.key[0]).is_relative_to(d) for d in package_dirs)
    ]
    by_cumulative = sorted(fxlazy_functions, key=lambda function: function.cumulative, reverse=True)[:top]
    by_own_time = sorted(functions, key=lambda function: function.own, reverse=True)[:top]

    def row(function: ProfiledFunction, seconds: float) -> list[str]:
        name = describe_function(function.key, package_dirs)
        return [name, f"{function.calls:g}", format_ms(seconds), f"{seconds / total:.0%}"]

    cumulative_table = markdown_table(
        [row(function, function.cumulative) for function in by_cumulative],
        ["fxlazy function", "calls per materialize", "cumulative (ms)", "share"],
    )
    own_time_table = markdown_table(
        [row(function, function.own) for function in by_own_time],
        ["function", "calls per materialize", "own time (ms)", "share"],
    )
    return (
        f"## Profile\n\ncProfile over {calls} warm materialize calls on UpsamplingDecoder(size={size}), "
        f"batch {BATCH}, averaged per call: {format_ms(total)} ms per call. cProfile slows Python code "
        f"down, so compare shares, not times, with the timing table.\n\nfxlazy's functions by cumulative time:\n\n"
        f"{cumulative_table}\n\nAll functions by own time:\n\n{own_time_table}\n"
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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time fxlazy.materialize against an eager dry run and against building the static "
            "model directly, and measure peak memory and the cold first call. Prints Markdown tables."
        ),
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODEL_SIZES),
        default=list(MODEL_SIZES),
        help="models to measure: UpsamplingDecoder with that output side, batch 8 (default: all)",
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
        default=30,
        help="timed round-robin rounds per model after one warm-up round (default: %(default)s)",
    )
    parser.add_argument(
        "--cold-repeats",
        type=positive_int,
        metavar="N",
        default=3,
        help="fresh processes per model for the cold-start stage (default: %(default)s)",
    )
    parser.add_argument(
        "--profile-model",
        choices=list(MODEL_SIZES),
        default="decoder-256",
        help="model for the profile stage (default: %(default)s)",
    )
    parser.add_argument(
        "--profile-calls",
        type=positive_int,
        metavar="N",
        default=10,
        help="warm materialize calls that the profile stage averages over (default: %(default)s)",
    )
    parser.add_argument(
        "--profile-top",
        type=positive_int,
        metavar="N",
        default=10,
        help="rows in each profile table (default: %(default)s)",
    )
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write the Markdown results to this file")
    # Hidden flags that run one measurement in a fresh subprocess and print JSON.
    parser.add_argument("--child-memory", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--child-cold-start", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--child-preimport", metavar="MODULES", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child-import", metavar="MODULES", help=argparse.SUPPRESS)

    return parser.parse_args(argv)


def run_child_mode(arguments: argparse.Namespace) -> bool:
    """Run the measurement that a hidden flag requests, print its JSON and return whether one ran."""
    if arguments.child_memory:
        model_key, method_key = arguments.child_memory
        result = measure_memory_in_child(model_key, method_key)
    elif arguments.child_cold_start:
        preimport = arguments.child_preimport.split(",") if arguments.child_preimport else []
        result = measure_cold_start_in_child(arguments.child_cold_start, preimport)
    elif arguments.child_import:
        result = measure_import_in_child(arguments.child_import.split(","))
    else:
        return False
    print(json.dumps(result))
    return True


def run_stages(arguments: argparse.Namespace) -> list[str]:
    sections = [f"# fxlazy.materialize benchmark\n\n{describe_environment()}"]
    digest_at_start = fxlazy_source_digest()

    if "timing" in arguments.stages:
        samples_by_model = {}
        for model_key in arguments.models:
            log_progress(f"timing: {model_key}, {arguments.repeats} rounds")
            size = MODEL_SIZES[model_key]
            samples_by_model[model_key] = time_round_robin(size, build_example(size), arguments.repeats)
        sections.append(format_timing(samples_by_model, arguments.repeats))

    if "memory" in arguments.stages:
        sections.append(format_memory(measure_memory(arguments.models)))

    if "cold-start" in arguments.stages:
        sections.append(format_cold_start(measure_cold_start(arguments.models, arguments.cold_repeats)))

    if "profile" in arguments.stages:
        log_progress(f"profile: {arguments.profile_model}")
        size = MODEL_SIZES[arguments.profile_model]
        sections.append(profile_materialize(size, build_example(size), arguments.profile_calls, arguments.profile_top))

    # The timing and profile stages run the code imported at start, while each subprocess
    # imports the files on disk when it starts. An edit during the run mixes two versions.
    sections.append(f"Load average at the end (1, 5 and 15 minutes): {format_load_average()}.\n")
    digest_at_end = fxlazy_source_digest()
    if digest_at_end != digest_at_start:
        sections.append(
            f"**Warning:** fxlazy's source changed during the run (digest {digest_at_start} at start, "
            f"{digest_at_end} at the end), so the stages may have measured different code. Run again.\n"
        )
    return sections


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if run_child_mode(arguments):
        return
    if "memory" in arguments.stages and sys.platform != "linux":
        sys.exit("error: the memory stage reads peak RSS from Linux's /proc/self/status, so leave memory out of --stages")

    text = "\n".join(run_stages(arguments))
    print(text)
    if arguments.output:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text)
        log_progress(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
