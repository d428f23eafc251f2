"""Build the returned GraphModule so that it keeps the model's full module hierarchy.

``torch.fx.GraphModule(root, graph)`` copies only the submodules and attributes the graph
references, in graph order. A module that forward never calls, or a parameter owned by
a container, would be dropped, and the state_dict keys would come in another order
than the model's. Here every module the tracer inlined becomes a plain ``nn.Module``
holding the same parameters, buffers and children in the same order, and every other
module (the leaves, and modules forward never calls) is kept as the object it is.
"""

from __future__ import annotations

from collections.abc import Set

import torch
import torch.fx
from torch import nn

from .records import MODEL_NAME_KEY

__all__ = ["assemble_graph_module"]


def _copy_state_into(shell: nn.Module, module: nn.Module) -> None:
    shell.training = module.training
    shell._parameters = dict(module._parameters)
    shell._buffers = dict(module._buffers)
    shell._non_persistent_buffers_set = set(module._non_persistent_buffers_set)


def _mirror(module: nn.Module, name: str, traced_through: Set[str], memo: dict[int, nn.Module]) -> nn.Module:
    if id(module) in memo:
        return memo[id(module)]
    if name not in traced_through:
        memo[id(module)] = module
        return module

    shell = nn.Module()
    memo[id(module)] = shell
    _copy_state_into(shell, module)
    for child_name, child in module._modules.items():
        child_path = f"{name}.{child_name}" if name else child_name
        shell._modules[child_name] = None if child is None else _mirror(child, child_path, traced_through, memo)
    return shell


def _copy_plain_attributes(gm: torch.fx.GraphModule, root: nn.Module) -> None:
    """Copy attributes read by get_attr nodes that are neither parameters, buffers nor modules."""
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        owner_path, _, attribute = node.target.rpartition(".")
        owner = gm.get_submodule(owner_path)
        if not hasattr(owner, attribute):
            setattr(owner, attribute, getattr(root.get_submodule(owner_path), attribute))


def assemble_graph_module(
    root: nn.Module, graph: torch.fx.Graph, traced_through: Set[str], class_name: str
) -> torch.fx.GraphModule:
    """Return a GraphModule running ``graph`` over the full module tree of ``root``.

    Args:
        root: the traced module; its leaves and parameters are shared, not copied.
        graph: the graph traced from ``root``.
        traced_through: qualified names of the modules whose forward the graph inlines.
        class_name: the class name the GraphModule reports, usually the model's.
    """
    gm = torch.fx.GraphModule(root, graph, class_name)
    memo: dict[int, nn.Module] = {id(root): gm}
    _copy_state_into(gm, root)
    gm._modules = {
        name: None if child is None else _mirror(child, name, traced_through, memo)
        for name, child in root._modules.items()
    }
    _copy_plain_attributes(gm, root)
    gm.meta[MODEL_NAME_KEY] = class_name
    return gm
