"""The profile stage: cProfile over warm materialize calls."""

from __future__ import annotations

import cProfile
import gc
import pstats
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import fxlazy
import fxlazy.passes
from bench_common import format_ms, markdown_table
from bench_methods import run_fxlazy
from bench_models import BenchModel


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


def profile_materialize(model: BenchModel, example: torch.Tensor, calls: int, top: int) -> str:
    """Profile ``calls`` warm materialize calls and tabulate fxlazy's functions and the top own-time functions.

    Times are per call, averaged over the calls, so that one call preempted by another
    process weighs less.
    """
    # The warm-up call keeps the one-time imports out of the profile.
    run_fxlazy(model, example)
    profiler = cProfile.Profile()
    for _ in range(calls):
        gc.collect()
        profiler.enable()
        result = run_fxlazy(model, example)
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
        f"## Profile of {model.name}\n\ncProfile over {calls} warm materialize calls on {model.description}, "
        f"averaged per call: {format_ms(total)} ms per call. cProfile slows Python code down, so "
        f"compare shares, not times, with the timing table.\n\nfxlazy's functions by cumulative time:\n\n"
        f"{cumulative_table}\n\nAll functions by own time:\n\n{own_time_table}\n"
    )
