"""Write notebooks/quickstart.ipynb from the cells below, then execute it and save its outputs.

    python notebooks/build_quickstart.py

Edit the cells here rather than in the notebook, so that the notebook's source stays
reviewable as Python. Needs the ``notebooks`` extra and Graphviz's ``dot`` program.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from execute_notebooks import execute_notebook

NOTEBOOK = Path(__file__).resolve().parent / "quickstart.ipynb"

CELLS = [
    new_markdown_cell(
        "# fxlazy quickstart: from a lazy model to a static GraphModule\n"
        "\n"
        "One `LazyConvTranspose2d(out_channels=32, kernel_size=3, stride=2)` layer is fed a "
        "64-channel input. `fxlazy.materialize` turns it into a static `torch.fx.GraphModule` "
        "without running the model. The shape report then shows what was inferred, in each of "
        "its forms, and `fxlazy.draw_graph` draws it. At the end, the static module is compared "
        "with the same model written by hand as `ConvTranspose2d(in_channels=64, ...)`."
    ),
    new_code_cell(
        "import json\n"
        "\n"
        "import torch\n"
        "from torch import nn\n"
        "\n"
        "import fxlazy\n"
        "from fxlazy import examples\n"
        "\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.LazyConvTranspose2d(out_channels=32, kernel_size=3, stride=2))\n"
        "example = torch.randn(1, 64, 8, 8)\n"
        "model"
    ),
    new_markdown_cell(
        "## Materialize\n"
        "\n"
        "`materialize` traces the model with torch.fx, propagates shapes on meta tensors, and "
        "initializes only the parameters of the lazy layers. `seed=0` initializes them from "
        "`torch.manual_seed(0)` and leaves the global random state as it was. The model itself "
        "stays lazy."
    ),
    new_code_cell(
        "static = fxlazy.materialize(model, example, seed=0)\n"
        "print(static.get_submodule(\"0\"))\n"
        "print(\"the model's own layer is still\", type(model[0]).__name__)\n"
        "print(static.code)"
    ),
    new_markdown_cell(
        "## The shape report\n"
        "\n"
        "`fxlazy.shape_report(static)` rebuilds the report from the GraphModule alone. As the "
        "value of a cell it shows as an HTML table. The lazy view, the default, has one row per "
        "materialized layer: the call sites in the graph, the class change, the inferred "
        "constructor arguments and the input dimension they were read from, the output width, "
        "the shapes, the dtype and the parameter count."
    ),
    new_code_cell("report = fxlazy.shape_report(static)\nreport"),
    new_markdown_cell("The same table as text, in any `tabulate` format, as Markdown and as CSV:"),
    new_code_cell("print(report)"),
    new_code_cell("print(report.to_string(\"grid\"))"),
    new_code_cell("print(report.to_markdown())"),
    new_code_cell("print(report.to_csv())"),
    new_markdown_cell(
        "`to_dict()` and `to_json()` hold every layer, every graph node and the totals, under a "
        "schema name and a version number:"
    ),
    new_code_cell(
        "data = json.loads(report.to_json())\n"
        "print(data[\"schema\"], \"version\", data[\"version\"])\n"
        "print(json.dumps(data[\"layers\"][0]))\n"
        "print(json.dumps(data[\"totals\"]))"
    ),
    new_markdown_cell(
        "The graph view has one row per graph node, functional operations included. Columns "
        "can be picked by key; an unknown key raises `fxlazy.ReportError` listing the valid ones."
    ),
    new_code_cell("report.graph_view()"),
    new_code_cell(
        "print(report.lazy_view(columns=[\"layer\", \"inferred\", \"output_shape\", \"params\"]).to_string(\"github\"))"
    ),
    new_markdown_cell(
        "For a model with nested modules, `depth` groups the nodes under the modules whose "
        "forward created them. Here `shape_report` is given the lazy bundled U-Net decoder and "
        "its example; it materializes a private copy and leaves the model lazy."
    ),
    new_code_cell(
        "unet = examples.UNetDecoder()\n"
        "unet_report = fxlazy.shape_report(unet, examples.UNetDecoder.example_inputs())\n"
        "print(unet_report.graph_view(depth=1))"
    ),
    new_markdown_cell(
        "## The picture\n"
        "\n"
        "`fxlazy.draw_graph` draws each node with its output shape, and each materialized layer "
        "with its inferred widths. It needs the `draw` extra (`pip install \"fxlazy[draw]\"`) and "
        "Graphviz's `dot` program. Pass a path ending in `.svg`, `.png`, `.pdf` or `.dot` to "
        "write a file."
    ),
    new_code_cell("fxlazy.draw_graph(static)"),
    new_markdown_cell(
        "## Compared with the model written by hand\n"
        "\n"
        "Built under the same seed, the hand-written model has the same layer, the same "
        "parameters bit for bit, the same outputs and the same graph view."
    ),
    new_code_cell(
        "torch.manual_seed(0)\n"
        "hand_written = nn.Sequential(nn.ConvTranspose2d(in_channels=64, out_channels=32, kernel_size=3, stride=2))\n"
        "print(hand_written[0])\n"
        "print(static.get_submodule(\"0\"))"
    ),
    new_code_cell(
        "x = torch.randn(2, 64, 8, 8)\n"
        "static_state, hand_state = static.state_dict(), hand_written.state_dict()\n"
        "print(\"same keys:\", list(static_state) == list(hand_state))\n"
        "print(\"same parameters:\", all(torch.equal(static_state[k], hand_state[k]) for k in hand_state))\n"
        "print(\"same outputs:\", torch.equal(static(x), hand_written(x)))\n"
        "hand_report = fxlazy.shape_report(hand_written, example)\n"
        "print(\"same graph view:\", str(hand_report.graph_view()) == str(report.graph_view()))\n"
        "print(hand_report)"
    ),
]


def main() -> None:
    """Write the notebook, execute it in a fresh kernel, and save it with its outputs."""
    notebook = new_notebook(cells=CELLS)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    nbformat.validate(notebook)
    nbformat.write(notebook, NOTEBOOK)
    execute_notebook(NOTEBOOK, write=True)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
