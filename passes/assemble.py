"""Build the returned GraphModule so that it keeps the model's full module hierarchy.

``torch.fx.GraphModule(root, graph)`` copies only the submodules and attributes the graph
references, in graph order. A module that forward never calls, or a parameter owned by
a container, would be dropped, and the state_dict keys would come in another order
than the model's. Here every module the tracer inlined becomes a plain ``nn.Module``
with the same parameters, buffers and children in the same order. Every other module
(the leaves, and modules forward never calls) is copied, or, for an in-place
materialization, kept as the object it is. A lazy leaf whose static module was built in
advance (``passes/static_leaves.py``) is replaced by that module.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Set

import torch
import torch.fx
from torch import nn

from .clone import TensorCopier, clone_module
from .twins import to_meta
from .records import MODEL_NAME_KEY

__all__ = ["assemble_graph_module", "attach_module_tree", "new_graph_module"]


class _TreeBuilder:
    """Mirror a module tree, turning inlined containers into plain modules."""

    def __init__(
        self,
        traced_through: Set[str],
        copy_modules: bool,
        copy_tensor: TensorCopier,
        static_leaves: Mapping[int, nn.Module],
    ) -> None:
        self.traced_through = traced_through
        self.copy_modules = copy_modules
        self.copy_tensor = copy_tensor
        # Maps id() of an original module to its mirror, so a module registered under
        # two names stays one object. Static leaves built in advance are mirrors already.
        self.mirrors: dict[int, nn.Module] = dict(static_leaves)
        self.static_leaves = static_leaves

    def copy_state_into(self, shell: nn.Module, module: nn.Module) -> None:
        def own(tensor: torch.Tensor | None) -> torch.Tensor | None:
            if tensor is None or not self.copy_modules:
                return tensor
            return self.copy_tensor(tensor)

        shell.training = module.training
        shell._parameters = {k: own(v) for k, v in module._parameters.items()}
        shell._buffers = {k: own(v) for k, v in module._buffers.items()}
        shell._non_persistent_buffers_set = set(module._non_persistent_buffers_set)

    def mirror_children(self, shell: nn.Module, module: nn.Module, name: str) -> None:
        for child_name, child in module._modules.items():
            child_path = f"{name}.{child_name}" if name else child_name
            shell._modules[child_name] = None if child is None else self.mirror(child, child_path)

    def mirror(self, module: nn.Module, name: str) -> nn.Module:
        if id(module) in self.mirrors:
            return self.mirrors[id(module)]
        if name not in self.traced_through:
            result = clone_module(module, self.copy_tensor, name, self.static_leaves) if self.copy_modules else module
            self.mirrors[id(module)] = result
            return result

        shell = nn.Module()
        self.mirrors[id(module)] = shell
        self.copy_state_into(shell, module)
        self.mirror_children(shell, module, name)
        return shell


def _copy_plain_attributes(gm: torch.fx.GraphModule, root: nn.Module, copy_modules: bool, on_meta: bool) -> None:
    """Copy attributes read by get_attr nodes that are neither parameters, buffers nor modules."""
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        owner_path, _, attribute = node.target.rpartition(".")
        original_owner = root.get_submodule(owner_path)
        if attribute in original_owner._parameters or attribute in original_owner._buffers:
            continue
        if attribute in original_owner._modules:
            continue
        value = getattr(original_owner, attribute)
        if on_meta and isinstance(value, torch.Tensor):
            value = to_meta(value)
        elif copy_modules:
            value = copy.deepcopy(value)
        setattr(gm.get_submodule(owner_path), attribute, value)


def new_graph_module(root: nn.Module, graph: torch.fx.Graph, class_name: str) -> torch.fx.GraphModule:
    """Return a GraphModule for ``graph`` with its generated code, whose module tree ``attach_module_tree`` sets.

    Generating and compiling the code takes transient memory, 13 MiB on the 2,000-layer
    benchmark model (measured with tracemalloc). Callers allocate their copies of the
    modules afterwards, so the two do not add up in the peak.
    """
    # GraphModule.__init__ reads the graph's targets from the root. An empty root with
    # a graph is not accepted, so it is built over ``root`` and its tree replaced later.
    gm = torch.fx.GraphModule(root, graph, class_name)
    gm.meta[MODEL_NAME_KEY] = class_name
    return gm


def attach_module_tree(
    gm: torch.fx.GraphModule,
    root: nn.Module,
    traced_through: Set[str],
    copy_modules: bool = True,
    on_meta: bool = False,
    copy_tensor: TensorCopier | None = None,
    static_leaves: Mapping[int, nn.Module] | None = None,
) -> None:
    """Give ``gm`` the full module tree of ``root``, in place of what ``new_graph_module`` took over.

    Args:
        gm: the GraphModule from ``new_graph_module(root, ...)``.
        root: the traced module.
        traced_through: qualified names of the modules whose forward the graph inlines.
        copy_modules: copy every leaf, parameter and buffer, so the GraphModule shares
            nothing with ``root``. When false, the GraphModule shares them.
        on_meta: make the copies' tensors meta tensors, without data; needs ``copy_modules``.
        copy_tensor: the copier for parameters and buffers, when the caller has copied
            tensors with it already, so tied tensors stay tied; by default a new
            ``TensorCopier(on_meta)``.
        static_leaves: modules to place in the tree instead of copies, by ``id()`` of the
            original modules they replace (see ``passes/static_leaves.py``).
    """
    builder = _TreeBuilder(
        traced_through, copy_modules, copy_tensor or TensorCopier(on_meta), static_leaves or {}
    )
    builder.mirrors[id(root)] = gm
    builder.copy_state_into(gm, root)
    gm._modules = {}
    builder.mirror_children(gm, root, "")
    _copy_plain_attributes(gm, root, copy_modules, on_meta)


def assemble_graph_module(
    root: nn.Module,
    graph: torch.fx.Graph,
    traced_through: Set[str],
    class_name: str,
    copy_modules: bool = True,
    on_meta: bool = False,
) -> torch.fx.GraphModule:
    """Return a GraphModule running ``graph`` over the full module tree of ``root``.

    ``new_graph_module`` followed by ``attach_module_tree``; see those for the arguments.
    """
    gm = new_graph_module(root, graph, class_name)
    attach_module_tree(gm, root, traced_through, copy_modules, on_meta)
    return gm
