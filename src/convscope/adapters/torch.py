"""PyTorch models as convscope graphs.

The model runs once, in eval mode, on tensors that have shapes but no values (the meta device,
or fake tensors where a model mixes devices): no weight is read and no arithmetic is done. Each
call is recorded with its shapes as it happens, so whatever Python the forward runs (shape
checks, padding computed from the input size) simply runs. A torch.nn layer is recognised by its
nearest ``torch.nn`` base; every other torch call is mapped by the rules the operation families
declare (``convscope.registry``). A call without a rule is listed in ``Graph.unsupported``,
never counted as zero, and every parameter and buffer is attributed to the row that reads it,
or shown in a row of its own: totals always equal the model's own tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as tnn

from ..containers import Graph
from ..errors import ConvScopeError
from ..geometry import check_sizes
from .recorder import ModelFailed, Recorder
from .torch_calls import RUN_BATCH


def from_torch(module: tnn.Module, input_shape: Sequence[int] | None = None) -> Graph:
    """The module as a Graph of convscope specs, for inputs of ``input_shape`` (channel-first,
    without the batch). The model runs once on shape-only tensors, in eval mode."""
    if not isinstance(module, tnn.Module):
        raise ConvScopeError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    if input_shape is None:
        raise ConvScopeError(
            f"from_torch needs the input shape of {type(module).__name__} (channel-first, "
            "without the batch, e.g. (3, 224, 224)) to run it"
        )
    shape = check_sizes(input_shape, "from_torch")
    error: BaseException | None = None
    for device in ("meta", "fake"):  # meta is fastest; fake tensors also mix with CPU ones
        try:
            return Recorder(module, shape, device).run()
        except ModelFailed as failed:
            error = failed.__cause__
    assert error is not None
    why = f"{type(error).__name__}: {error}"
    if "DataDependent" in type(error).__name__:
        why = "its forward branches on the values of a tensor, which a shape-only run has not"
    raise ConvScopeError(
        f"{type(module).__name__} fails on an input of shape {(RUN_BATCH, *shape)}: {why}"
    ) from error
