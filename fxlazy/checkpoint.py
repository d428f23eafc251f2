"""Checkpoints: load a state_dict into a static module, or materialize a lazy model from one.

Files are read with ``torch.load(path, weights_only=True)`` only, which unpickles tensors
and plain containers but never runs code from the file. Every state_dict is checked
before anything is loaded: entries still uninitialized (saved from a lazy model that
never ran), missing or unexpected keys, and shapes that differ from the module's are
reported by key.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union

import torch
import torch.fx
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin, is_lazy

from ._materialize import materialize
from .errors import CheckpointError, ExampleInputError, UnsupportedLazyModuleError
from .passes.assemble import assemble_graph_module
from .passes.checkpoint_widths import materialize_from_width, read_checkpoint_width
from .passes.records import LAZY_CALL_KEY
from .passes.trace import trace_with_lazy_leaves
from .passes.widths import is_pending_lazy, lazy_tensor_device, width_rule_for

__all__ = ["Checkpoint", "load_checkpoint", "materialize_from_checkpoint"]

logger = logging.getLogger(__name__)

# A path to a file written by torch.save, or a state_dict already in memory.
Checkpoint = Union[str, os.PathLike, Mapping[str, torch.Tensor]]

# How many keys an error message lists before it counts the rest.
_KEYS_SHOWN = 8


def _list_keys(keys: list[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:_KEYS_SHOWN])
    rest = len(keys) - _KEYS_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown


def _unpickling_reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
    return specific.replace("WeightsUnpickler error: ", "")


def _read_file(path: Path) -> Any:
    try:
        # The two lazy tensor classes are allowed so that a state_dict saved from a lazy
        # model loads, and its uninitialized entries can be named in the error below.
        with torch.serialization.safe_globals([UninitializedParameter, UninitializedBuffer]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise CheckpointError(f"Cannot read checkpoint {path}: {error.strerror or error}. Check the path.") from error
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"torch.load(weights_only=True) rejected checkpoint {path}: {_unpickling_reason(error)}. "
            "fxlazy reads only files of tensors and plain containers. Save model.state_dict() "
            "rather than the model object; if you trust the file, load it yourself and pass "
            "the state_dict."
        ) from error
    except Exception as error:
        raise CheckpointError(
            f"torch.load cannot read checkpoint {path}: {type(error).__name__}: {error}. "
            "Check that the file was written by torch.save and is complete."
        ) from error


def _validate_state_dict(loaded: Any, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{source} contains a value of type {type(loaded).__name__}, not a state_dict. Save and pass "
            "model.state_dict(), a mapping of names to tensors."
        )

    not_tensors = [k for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not_tensors:
        described = ", ".join(f"'{k}' ({type(loaded[k]).__name__})" for k in not_tensors[:_KEYS_SHOWN])
        nested = next((k for k in ("state_dict", "model", "model_state_dict") if isinstance(loaded.get(k), Mapping)), None)
        remedy = (
            f"It looks like a training checkpoint; pass its '{nested}' entry instead."
            if nested
            else "Pass the model's state_dict, a mapping of names to tensors."
        )
        raise CheckpointError(
            f"{source} is not a state_dict: entries {described} are not tensors. {remedy}",
            keys=tuple(str(k) for k in not_tensors),
        )

    uninitialized = [k for k, v in loaded.items() if isinstance(v, UninitializedTensorMixin)]
    if uninitialized:
        raise CheckpointError(
            f"{source} contains uninitialized entries {_list_keys(uninitialized)}: it was saved "
            "from a lazy model before its first forward call, so it has no values for them. "
            "Save the state_dict after materializing the model (fxlazy.materialize, or one "
            "forward call), or leave those entries out.",
            keys=tuple(uninitialized),
        )
    return dict(loaded)


def _state_dict_of(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, (str, os.PathLike)):
        path = Path(checkpoint)
        return _validate_state_dict(_read_file(path), f"Checkpoint {path}")
    if isinstance(checkpoint, Mapping):
        return _validate_state_dict(checkpoint, "The state_dict")
    raise TypeError(
        f"checkpoint must be a path or a state_dict (a mapping of names to tensors), got a value of type {type(checkpoint).__name__}."
    )


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """Suggest the key prefix to strip when every checkpoint key has one extra, as DataParallel adds."""
    if not missing or not unexpected:
        return ""
    first_missing = missing[0]
    candidates = [k[: -len(first_missing)] for k in unexpected if k.endswith(first_missing) and k != first_missing]
    for prefix in candidates:
        if all(f"{prefix}{k}" in unexpected for k in missing):
            return f" Every checkpoint key has the extra prefix '{prefix}'; strip it before loading."
    return ""


def _check_fits(module: nn.Module, state: Mapping[str, torch.Tensor], strict: bool) -> None:
    own = module.state_dict()
    if strict:
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"it lacks {_list_keys(missing)}")
            if unexpected:
                parts.append(f"it has entries the module does not, {_list_keys(unexpected)}")
            raise CheckpointError(
                f"The checkpoint does not fit {type(module).__name__}: {'; '.join(parts)}."
                f"{_prefix_hint(missing, unexpected)} Check that it was saved from this model, or "
                "pass strict=False to load the entries that match.",
                keys=tuple(missing + unexpected),
            )

    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if mismatched:
        lines = [
            f"'{k}': checkpoint shape {tuple(state[k].shape)}, module shape {tuple(own[k].shape)}"
            for k in mismatched[:_KEYS_SHOWN]
        ]
        more = f" and {len(mismatched) - _KEYS_SHOWN} more" if len(mismatched) > _KEYS_SHOWN else ""
        raise CheckpointError(
            f"The checkpoint's shapes differ from {type(module).__name__}'s for "
            f"{len(mismatched)} entr{'y' if len(mismatched) == 1 else 'ies'}: {'; '.join(lines)}{more}. "
            "Check that the checkpoint was saved from a model built with the same widths, "
            "and that the example has the shapes it was trained on.",
            keys=tuple(mismatched),
        )


def load_checkpoint(
    module: nn.Module, checkpoint: Checkpoint, *, strict: bool = True
) -> torch.nn.modules.module._IncompatibleKeys:
    """Load a checkpoint into a static module, after checking every key and shape.

    The checkpoint may come from the eagerly materialized model or from an earlier
    fxlazy result: both have the model's own state_dict keys.

    Args:
        module: a module without lazy modules left, such as the result of
            :func:`fxlazy.materialize`. Its tensors are overwritten in place.
        checkpoint: a path to a file written by ``torch.save(model.state_dict(), path)``,
            read with ``torch.load(..., weights_only=True)``, or a state_dict.
        strict: require the checkpoint's keys to equal the module's. Shapes are checked
            either way.

    Returns:
        The missing and unexpected keys, as ``nn.Module.load_state_dict`` returns them.

    Raises:
        CheckpointError: the file cannot be read or is not a state_dict of tensors, it
            has uninitialized entries, keys are missing or unexpected (with ``strict``),
            an entry's shape differs from the module's, or the module is still lazy.
            The message names the keys and, for shapes, both shapes.

    Example:
        >>> import torch, fxlazy
        >>> model = torch.nn.Sequential(torch.nn.LazyLinear(4))
        >>> static = fxlazy.materialize(model, torch.randn(2, 3))
        >>> trained = torch.nn.Sequential(torch.nn.Linear(3, 4))
        >>> fxlazy.load_checkpoint(static, trained.state_dict())
        <All keys matched successfully>
        >>> torch.equal(static.get_submodule("0").weight, trained[0].weight)
        True
    """
    state = _state_dict_of(checkpoint)
    lazy = [k for k, t in (*module.named_parameters(), *module.named_buffers()) if is_lazy(t)]
    if lazy:
        raise CheckpointError(
            f"{type(module).__name__} still has uninitialized tensors {_list_keys(lazy)}, so there "
            "is nothing to load them into yet. Materialize it first (fxlazy.materialize), or use "
            "fxlazy.materialize_from_checkpoint, which takes the widths from the checkpoint.",
            keys=tuple(lazy),
        )
    _check_fits(module, state, strict)
    return module.load_state_dict(state, strict=strict)


def _default_arguments(model: nn.Module) -> dict[str, Any]:
    """Return forward's defaults, which are baked into the graph when there is no example.

    Every parameter without a default becomes a tensor input, like a tensor in an example.
    """
    signature = inspect.signature(model.forward)
    specialized = {}
    for parameter in signature.parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ExampleInputError(
                f"{type(model).__name__}.forward{signature} takes variadic arguments, which fxlazy "
                "does not support yet. Wrap the model in a module whose forward names each input."
            )
        if parameter.default is not inspect.Parameter.empty and not isinstance(parameter.default, torch.Tensor):
            specialized[parameter.name] = parameter.default
    return specialized


@contextlib.contextmanager
def _global_random_state_kept(devices: list[torch.device]) -> Iterator[None]:
    """Restore the random generators the lazy modules draw from, whose values are overwritten anyway."""
    accelerator_indexes = [d.index or 0 for d in devices if d.type == "cuda"]
    with torch.random.fork_rng(devices=accelerator_indexes):
        yield


def _materialize_without_example(model: nn.Module, state: Mapping[str, torch.Tensor]) -> torch.fx.GraphModule:
    if is_pending_lazy(model):
        raise UnsupportedLazyModuleError(
            f"The model itself is a lazy module ({type(model).__name__}), which fxlazy cannot "
            "materialize into a GraphModule. Wrap it in a container, for example "
            "nn.Sequential(model), and save and load the checkpoint of that."
        )
    pending = [(name, module) for name, module in model.named_modules() if is_pending_lazy(module)]

    # Everything that can fail runs before anything is copied.
    widths = {name: read_checkpoint_width(module, name, state) for name, module in pending}
    traced = trace_with_lazy_leaves(model, _default_arguments(model))

    gm = assemble_graph_module(model, traced.graph, traced.traced_through, type(model).__name__)
    devices = [d for d in (lazy_tensor_device(m) for _, m in pending) if d is not None]
    with _global_random_state_kept(devices):
        for name, width in widths.items():
            materialize_from_width(gm.get_submodule(name), width)
    gm.graph.lint()
    return gm


def _check_widths_agree(model: nn.Module, gm: torch.fx.GraphModule, state: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming the first layer whose width from the example differs from the checkpoint's."""
    sources = {
        node.meta[LAZY_CALL_KEY].module: node.meta[LAZY_CALL_KEY].source
        for node in gm.graph.nodes
        if LAZY_CALL_KEY in node.meta and node.meta[LAZY_CALL_KEY].call_index == 0
    }
    for name, module in model.named_modules():
        if not is_pending_lazy(module) or width_rule_for(module) is None:
            continue
        try:
            width = read_checkpoint_width(module, name, state)
        except (CheckpointError, NotImplementedError):
            # A missing entry is reported with every other missing key when loading.
            continue
        from_example = int(getattr(gm.get_submodule(name), width.argument))
        if from_example != width.width:
            source = f" (from {sources[name]})" if name in sources else ""
            raise CheckpointError(
                f"Layer '{name}' ({type(module).__name__}): the example gives {width.argument}="
                f"{from_example}{source}, but checkpoint entry '{width.key}' of shape {width.shape} "
                f"gives {width.argument}={width.width} (from {width.describe()}). Pass an example "
                "with the shapes the checkpoint was trained on, or the checkpoint saved from this model.",
                keys=(width.key,),
            )


def materialize_from_checkpoint(
    model: nn.Module,
    checkpoint: Checkpoint,
    example: Any = None,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
) -> torch.fx.GraphModule:
    """Materialize ``model`` with the widths and values of a checkpoint, with or without an example.

    Without an example, each lazy module's input width is read from the shape of its
    tensor in the checkpoint. That is ``weight.shape[1]`` of a Linear,
    ``weight.shape[1] * groups`` of a convolution, ``weight.shape[0]`` of a transposed
    convolution, and the length of a norm's weight or running mean. The module is built
    by its own class, so
    ``in_features``, ``in_channels`` and ``num_features`` agree with the weight shapes.
    Every lazy module is materialized, whether forward calls it or not. Tensor
    parameters of forward without a default become inputs; the other defaults are baked
    into the graph. With no example, no shapes are propagated, so the nodes carry no
    ``tensor_meta`` and :func:`fxlazy.shape_report` needs the model with an example.

    With an example, the model is materialized from it as :func:`fxlazy.materialize`
    does, and each width must agree with the checkpoint's.

    Then the checkpoint is loaded as :func:`load_checkpoint` loads it (strictly). The
    global random state is left as it was, because every initial value is overwritten.
    The model is not changed.

    Args:
        model: the lazy model.
        checkpoint: a path to a file written by ``torch.save(model.state_dict(), path)``,
            read with ``torch.load(..., weights_only=True)``, or a state_dict.
        example: the positional forward arguments, as :func:`fxlazy.materialize` takes
            them; None to read every width from the checkpoint.
        example_kwargs: keyword forward arguments, with ``example``.

    Returns:
        A ``torch.fx.GraphModule`` holding the checkpoint's values.

    Raises:
        CheckpointError: the checkpoint cannot be read, has uninitialized, missing or
            unexpected entries, or a shape that does not fit. It is also raised when an
            example's width differs from the checkpoint's, and the message then names the
            layer, the key and both widths.
        UnsupportedLazyModuleError: without an example, a lazy module is not a built-in
            lazy class of torch.nn, or a lazy norm owns no tensor recording its width.
        FxLazyError: any error :func:`fxlazy.materialize` raises.

    Example:
        >>> import torch, fxlazy
        >>> trained = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
        >>> model = torch.nn.Sequential(torch.nn.LazyConv2d(8, 3), torch.nn.LazyBatchNorm2d())
        >>> static = fxlazy.materialize_from_checkpoint(model, trained.state_dict())
        >>> static.get_submodule("0"), static.get_submodule("1").num_features
        (Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1)), 8)
    """
    state = _state_dict_of(checkpoint)
    if example is None and not example_kwargs:
        gm = _materialize_without_example(model, state)
    else:
        gm = materialize(model, () if example is None else example, example_kwargs=example_kwargs, seed=0)
        _check_widths_agree(model, gm, state)
    load_checkpoint(gm, state)
    logger.info("Materialized %s from a checkpoint of %d entries.", type(model).__name__, len(state))
    return gm
