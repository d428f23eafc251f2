"""Time a cold start of fxlazy in this fresh process and print the result as one JSON line.

The cold-start stage of bench_materialize.py runs this script in a new process for each
measurement::

    python cold_start_child.py MODEL [MODULES]

It times ``import torch`` and ``import fxlazy``, then imports the comma-separated MODULES
if given, timing that too. Then it builds the lazy model and materializes it twice, timing
the builds apart from the materialize calls, and lists the modules that the first
materialize call imported. Before that call it imports only the standard library modules,
bench_proc.py and bench_models.py, so that the benchmark's own imports hide none of the call's.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time
from typing import Any

# Standard library only, like the imports above.
from bench_proc import peak_rss_kib


def import_timed(name: str) -> tuple[Any, float]:
    start = time.perf_counter()
    module = importlib.import_module(name)
    return module, time.perf_counter() - start


def import_modules(names: list[str]) -> dict[str, Any]:
    """Import ``names`` in order and return the time, the extra peak RSS and the names that failed to import.

    Some modules that a call leaves in sys.modules cannot be imported by name, such as
    those that torch or Cython create at run time, and some fail when imported on their
    own. They are skipped.
    """
    baseline_kib = peak_rss_kib()
    failed = []
    start = time.perf_counter()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  (any error of a module's own code skips only that module)
            failed.append(name)
    seconds = time.perf_counter() - start
    return {
        "preimport_seconds": seconds,
        "preimport_extra_kib": peak_rss_kib() - baseline_kib,
        "preimport_failed": failed,
    }


def main(model_key: str, preimport: str) -> None:
    _, torch_seconds = import_timed("torch")
    fxlazy, fxlazy_seconds = import_timed("fxlazy")
    result: dict[str, Any] = {"torch_seconds": torch_seconds, "fxlazy_seconds": fxlazy_seconds}

    # Running this file by path puts its folder, which contains bench_models.py, on sys.path.
    from bench_models import MODELS

    if preimport:
        result.update(import_modules(preimport.split(",")))
    model = MODELS[model_key]
    example = model.make_example()

    for call in ("first", "second"):
        gc.collect()
        start = time.perf_counter()
        lazy_model = model.build(True)
        built = time.perf_counter()
        modules_before = set(sys.modules)
        graph_module = fxlazy.materialize(lazy_model, example)
        materialized = time.perf_counter()
        result[f"{call}_build_seconds"] = built - start
        result[f"{call}_materialize_seconds"] = materialized - built
        if call == "first":
            result["imported"] = [name for name in sys.modules if name not in modules_before]
        del lazy_model, graph_module

    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python cold_start_child.py MODEL [MODULE,MODULE,...]")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "")
