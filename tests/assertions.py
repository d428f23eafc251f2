"""Assertions shared by the test files."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy


def eager_dry_run(model: nn.Module, example: tuple[Any, ...], seed: int) -> tuple[nn.Module, Any]:
    """Materialize ``model`` the usual way, in eval mode under ``seed``; return it and its output."""
    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        output = model(*example)
    return model, output


def assert_state_dicts_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Assert same keys in the same order, and bit-identical values with equal dtypes."""
    assert list(actual) == list(expected)
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, key
        assert actual[key].shape == expected[key].shape, key
        assert torch.equal(actual[key], expected[key]), key


def snapshot_model(model: nn.Module) -> dict[str, Any]:
    """Record what materialize must not change: classes, tensor objects, flags and buffers."""
    modules = dict(model.named_modules(remove_duplicate=False))
    return {
        "classes": {name: type(m) for name, m in modules.items()},
        "training": {name: m.training for name, m in modules.items()},
        "parameters": {name: p for name, p in model.named_parameters(remove_duplicate=False)},
        "lazy": {name for name, t in [*model.named_parameters(), *model.named_buffers()] if is_lazy(t)},
        "values": {
            name: t.detach().clone()
            for name, t in [*model.named_parameters(), *model.named_buffers()]
            if not is_lazy(t)
        },
        "hooks": {name: (len(m._forward_pre_hooks), len(m._load_state_dict_pre_hooks)) for name, m in modules.items()},
        "attributes": {name: {k: v for k, v in vars(m).items() if type(v) in (int, float, bool, str)} for name, m in modules.items()},
    }


def assert_model_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    """Assert that ``model`` still matches a ``snapshot_model`` taken earlier."""
    after = snapshot_model(model)
    assert after["classes"] == before["classes"]
    assert after["training"] == before["training"]
    assert after["lazy"] == before["lazy"]
    assert after["hooks"] == before["hooks"]
    assert after["attributes"] == before["attributes"]
    assert after["parameters"].keys() == before["parameters"].keys()
    for name, parameter in before["parameters"].items():
        assert after["parameters"][name] is parameter, name
    assert after["values"].keys() == before["values"].keys()
    for name, value in before["values"].items():
        assert after["values"][name].shape == value.shape, name
        assert after["values"][name].device == value.device, name
        # Meta tensors have no values to compare.
        if value.device.type != "meta":
            assert torch.equal(after["values"][name], value), name


def source_line_of(function: Any, text: str) -> int:
    """Return the file line number of the first line of ``function``'s source that contains ``text``."""
    lines, first_line = inspect.getsourcelines(function)
    for offset, line in enumerate(lines):
        if text in line:
            return first_line + offset
    raise ValueError(f"{text!r} not found in the source of {function.__qualname__}")


@dataclass(frozen=True)
class ParsedReport:
    """A shape report table read back from its printed "simple" tabulate text."""

    headers: list[str]
    rows: list[dict[str, str]]
    total_layers: int
    total_parameters: int
    total_bytes: int
    model_parameters: int
    model_bytes: int


# The two lines ShapeReport.to_string prints under the lazy view's table.
_TOTALS_PATTERN = re.compile(
    r"^\S+: (?P<layers>\d+) lazy layers? materialized, (?P<parameters>[\d,]+) parameters? "
    r"\((?P<bytes>[\d,]+) bytes?\) in them\.$"
)
_MODEL_TOTALS_PATTERN = re.compile(r"^Whole model: (?P<parameters>[\d,]+) parameters? \((?P<bytes>[\d,]+) bytes?\)\.$")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def parse_report_table(text: str) -> ParsedReport:
    """Read the rows and the totals lines of a shape report printed in tabulate's "simple" format.

    Column bounds come from the dashed rule under the header line. Text before the header
    (such as the first line ``python -m fxlazy`` prints) is skipped.
    """
    lines = text.splitlines()
    rule_index = next(i for i, line in enumerate(lines) if line.strip() and set(line) <= {"-", " "})
    rule = lines[rule_index]
    spans = [match.start() for match in re.finditer(r"-+", rule)]
    bounds = list(zip(spans, [*spans[1:], None]))

    def cells(line: str) -> list[str]:
        return [line[start:end].strip() for start, end in bounds]

    headers = cells(lines[rule_index - 1])
    rows: list[dict[str, str]] = []
    for index in range(rule_index + 1, len(lines)):
        totals = _TOTALS_PATTERN.match(lines[index])
        if totals:
            model = _MODEL_TOTALS_PATTERN.match(lines[index + 1]) if index + 1 < len(lines) else None
            if model is None:
                raise ValueError(f"no 'Whole model:' line after the totals line in:\n{text}")
            return ParsedReport(
                headers,
                rows,
                int(totals["layers"]),
                _number(totals["parameters"]),
                _number(totals["bytes"]),
                _number(model["parameters"]),
                _number(model["bytes"]),
            )
        rows.append(dict(zip(headers, cells(lines[index]))))
    raise ValueError(f"no totals line after the table in:\n{text}")
