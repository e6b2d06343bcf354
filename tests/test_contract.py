"""The contract every operation family keeps, checked over the registry (tests/cases.py).

For each registered family and each of its cases:

* ``shape_vs_torch``: the shape rule gives the twin's output shape;
* ``counts_vs_reference``: the closed-form counts equal the instrumented reference's, in both
  count modes (a data-dependent count is its worst case, never below the reference);
* ``backward_vs_finite_differences``: the engine's gradients (inputs and parameters) equal
  central differences in float64;
* ``backward_vs_autograd``: the engine's output and gradients equal PyTorch autograd's on the
  twin with the same weights;
* ``specfile_round_trip``: a spec file written from the module builds the same spec;
* ``adapter_mapping``: tracing the twin gives the case's spec;
* ``receptive_field_vs_dependence``: the receptive-field rule says which input positions each
  output depends on, found by perturbing every input entry of the twin at inference.

The test functions are named ``test_<family>_<oracle>``, so ``pytest -k batchnorm`` finds
everything about BatchNorm. A face a family declares NotSupported has no test of its own; the
declarations themselves are checked by ``test_every_family_declares_every_face``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

from convscope import registry
from convscope.adapters.torch import from_torch
from convscope.containers import Sequential
from convscope.module import Module
from convscope.ops.base import FACES, pointwise_field
from convscope.ops.structural import MovingOp, moves_values
from convscope.random import manual_seed
from convscope.receptive import Field
from convscope.specfile import dump_spec, load_spec
from tests import cases
from tests.cases import Case, Wrap
from tests.reference.instrumented import COUNT_KEYS

torch.backends.mkldnn.enabled = False  # native CPU kernels, as the shape tests
FAMILIES = {family.name: family for family in registry.families()}
PARTS = ("forward", "backward_input", "backward_weight", "backward_bias")


def test_every_family_has_cases():
    missing = sorted(set(FAMILIES) - set(cases.CASES))
    assert not missing, f"families registered without cases in tests/cases.py: {missing}"
    assert not set(cases.CASES) - set(FAMILIES), "cases for a family that is not registered"
    assert all(cases.CASES[name] for name in FAMILIES)
    assert all(c.family == name for name, group in cases.CASES.items() for c in group)


def test_every_family_declares_every_face():
    for family in FAMILIES.values():
        for face in ("modules", "functional", "spec_file", "torch"):
            value = getattr(family, face)
            if isinstance(value, registry.NotSupported):
                assert value.reason, f"{family.name}.{face} is NotSupported without a reason"
            else:
                assert isinstance(value, (Mapping, registry.TorchMapping)), (family.name, face)
        for spec in family.specs:
            for face in FACES:
                assert getattr(spec, face) is not getattr(registry.Op, face), (spec, face)


def test_an_incomplete_family_is_refused():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Half(registry.Op):
        def _check_input(self, input_shape):
            return input_shape

    with pytest.raises(TypeError, match="does not define _shape"):
        registry.register(registry.Family("half", (Half,), {}, {}, {}, registry.TorchMapping()))
    assert "half" not in {f.name for f in registry.families()}


# -- helpers -----------------------------------------------------------------------------------


def spec_of(obj: Any) -> registry.Op:
    return obj.spec if isinstance(obj, Module) else obj


def shape_argument(case: Case) -> Any:
    return case.shapes[0] if len(case.shapes) == 1 else list(case.shapes)


def inputs(case: Case, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (case.batch, *shape)) for shape in case.shapes]


def prepared(case: Case, train: bool | None = None) -> tuple[Any, Any]:
    """Convscope's object (float64, weights drawn) and the twin holding the same weights."""
    manual_seed(0)
    ours = case.build()
    twin = case.twin()
    mode = case.train if train is None else train
    if isinstance(twin, torch.nn.Module):
        twin.double().train(mode)
    if isinstance(ours, Module):
        ours.astype(np.float64).train(mode)
        rng = np.random.default_rng(1)
        for _, p in ours.named_parameters():
            p.data = rng.uniform(0.5, 1.5, p.shape)  # away from zero: no cancellation
        twin.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, twin


def run_ours(case: Case, ours: Any, xs: list[np.ndarray]):
    """The forward output and a backward that returns the input and parameter gradients."""
    if isinstance(ours, Module):

        def forward(values: list[np.ndarray]) -> np.ndarray:
            manual_seed(0)  # a random layer draws the same mask every time
            return ours.forward(values[0])

        def backward(g: np.ndarray) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
            ours.zero_grad()
            gx = ours.backward(g)
            return [gx], {n: p.grad for n, p in ours.named_parameters()}

        return forward, backward
    assert case.run is not None, f"{case.family} has no module: its case needs a run"

    def forward(values: list[np.ndarray]) -> np.ndarray:
        return case.run(values)[0]

    def backward(g: np.ndarray) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        return case.run(xs)[1](g), {}

    return forward, backward


def run_twin(twin: Any, xs: list[np.ndarray]) -> torch.Tensor:
    tensors = [torch.tensor(x) for x in xs]
    return twin(*tensors)


# -- the oracles ---------------------------------------------------------------------------------


def check_shape_vs_torch(case: Case) -> None:
    ours, twin = prepared(case)
    expected = tuple(run_twin(twin, [np.zeros((case.batch, *s)) for s in case.shapes]).shape[1:])
    assert spec_of(ours).output_shape(shape_argument(case)) == expected


def check_counts_vs_reference(case: Case) -> None:
    spec = spec_of(case.build())
    for mode in ("exact", "dense"):
        theirs = case.counts(case.batch, mode)
        cost = spec.cost(shape_argument(case), case.batch, mode)
        assert spec.output_shape(shape_argument(case)) == tuple(theirs["output_shape"])
        for part in PARTS:
            mine, counted = getattr(cost, part), theirs.get(part)
            assert (mine is None) == (counted is None), (mode, part, mine, counted)
            if mine is None:
                continue
            for key in COUNT_KEYS:
                value = counted.get(key, 0)
                if mine.upper_bound and key == "adds":  # the worst case over all inputs
                    assert value <= getattr(mine, key), (mode, part, key)
                else:
                    assert getattr(mine, key) == value, (mode, part, key, mine, counted)


def engine_pass(case: Case):
    """One forward and backward of the engine: the objects, the inputs, the forward, its output,
    the upstream gradient and the input and parameter gradients."""
    ours, twin = prepared(case)
    xs = inputs(case)
    forward, backward = run_ours(case, ours, xs)
    y = forward(xs)
    g = np.random.default_rng(2).standard_normal(y.shape)
    grads, param_grads = backward(g)
    return ours, twin, xs, forward, y, g, grads, param_grads


def check_backward_vs_finite_differences(case: Case) -> None:
    ours, _, xs, forward, _, g, grads, param_grads = engine_pass(case)

    def loss() -> float:
        return float(np.sum(forward(xs) * g))

    def numeric(array: np.ndarray) -> np.ndarray:
        out = np.zeros_like(array)
        for index in np.ndindex(*array.shape):
            keep = array[index]
            array[index] = keep + 1e-6
            up = loss()
            array[index] = keep - 1e-6
            down = loss()
            array[index] = keep
            out[index] = (up - down) / 2e-6
        return out

    pairs = [("input", grad, x) for x, grad in zip(xs, grads)]
    if isinstance(ours, Module):
        pairs += [(name, param_grads[name], p.data) for name, p in ours.named_parameters()]
    for name, grad, array in pairs:
        expected = numeric(array)
        error = np.max(np.abs(grad - expected))
        assert error <= 1e-6 * max(1.0, np.max(np.abs(expected))), name


def check_backward_vs_autograd(case: Case) -> None:
    ours, twin, xs, _, y, g, grads, param_grads = engine_pass(case)
    tensors = [torch.tensor(x, requires_grad=True) for x in xs]
    y_torch = twin(*tensors)
    y_torch.backward(torch.tensor(g))
    # 1e-7: PyTorch's float64 hardsigmoid multiplies by a float32 one sixth
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-7, atol=1e-12)
    for grad, t in zip(grads, tensors):
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-7, atol=1e-11)
    if isinstance(ours, Module):
        theirs = dict(twin.named_parameters())
        assert set(param_grads) == set(theirs)
        for name, grad in param_grads.items():
            np.testing.assert_allclose(grad, theirs[name].grad.numpy(), rtol=1e-9, atol=1e-11)


def check_specfile_round_trip(case: Case) -> None:
    module = case.build()
    assert isinstance(module, Module), f"{case.family} declares spec-file keys but no module"
    written = json.loads(json.dumps(dump_spec(Sequential(module), case.shapes[0])))
    rebuilt = load_spec(written)
    assert rebuilt[0].spec == module.spec
    assert type(rebuilt[0]) is type(module)


def check_adapter_mapping(case: Case) -> None:
    if case.traced is not None:
        traced = case.traced()
    else:
        twin = case.twin()  # a module as a model's layer (a leaf of the trace), or a function
        traced = torch.nn.Sequential(twin) if isinstance(twin, torch.nn.Module) else Wrap(twin)
    graph = from_torch(traced, case.shapes[0])
    assert graph.unsupported == []
    family = FAMILIES[case.family]
    found = [node.spec for node in graph.nodes.values() if type(node.spec) in family.specs]
    assert found == [spec_of(case.build())]


def dependence(case: Case) -> tuple[np.ndarray, list[np.ndarray]]:
    """For every output entry (batch item 0) and every input entry, whether raising the input
    entry changes the output entry, at inference."""
    _, twin = prepared(case, train=False)
    xs = [x[:1] for x in inputs(case)]
    with torch.no_grad():
        base = run_twin(twin, xs).numpy()[0]
        reach = []
        for i, x in enumerate(xs):
            hits = np.zeros(base.shape + x.shape[1:], dtype=bool)
            for index in np.ndindex(*x.shape[1:]):
                moved = [v.copy() for v in xs]
                moved[i][(0, *index)] += 5.0
                changed = np.abs(run_twin(twin, moved).numpy()[0] - base) > 1e-9
                hits[(..., *index)] = changed
            reach.append(hits)
    return base, reach


def positions(hits: np.ndarray, out_index: tuple[int, ...], in_rank: int) -> list[tuple[int, ...]]:
    """The spatial positions (channels merged) of the input entries an output entry reads."""
    found = np.argwhere(hits[out_index])
    return (
        sorted({tuple(int(v) for v in row[1:]) for row in found})
        if in_rank > 1
        else ([()] if len(found) else [])
    )


def check_receptive_field_vs_dependence(case: Case) -> None:
    spec = spec_of(case.build())
    shape = shape_argument(case)
    out_shape = spec.output_shape(shape)
    in_rank = len(case.shapes[0])
    field = spec.receptive_field(Field.identity(in_rank - 1), shape, out_shape)
    base, reach = dependence(case)
    outputs = list(np.ndindex(*base.shape))
    rule = type(spec).receptive_field
    assert not field.unknown, f"{case.family} has no receptive-field rule"
    if field.global_ or field.statistics:
        for hits, in_shape in zip(reach, case.shapes):
            for o in outputs:
                if in_rank > 1:
                    assert len(positions(hits, o, in_rank)) == math.prod(in_shape[1:]), o
                else:
                    assert hits[o].all(), o
        return
    if field.undefined:  # the windows differ in size or step along some axis
        spans = {tuple(np.ptp(np.array(positions(reach[0], o, in_rank)), axis=0)) for o in outputs}
        starts = [positions(reach[0], o, in_rank)[0] for o in outputs]
        steps = {tuple(b - a for a, b in zip(p, q)) for p, q in zip(starts, starts[1:])}
        assert len(spans) > 1 or len(steps) > 2, "the field says it varies, but it does not"
        return
    if rule is moves_values or isinstance(spec, MovingOp) or len(out_shape) != in_rank:
        # each output entry is one input entry: one position of at most one entry per input
        assert all(v == 1 for v in field.size)
        for o in outputs:
            found = [positions(hits, o, in_rank) for hits in reach]
            assert all(len(p) <= 1 for p in found) and any(found), o
        return
    for o in outputs:  # a window: output o reads o·j − p … o·j − p + r − 1 along each axis
        for hits, in_shape in zip(reach, case.shapes):
            found = np.array(positions(hits, o, in_rank))
            assert len(found), f"output {o} reads nothing"
            for axis, (r, j, p) in enumerate(zip(field.size, field.stride, field.padding)):
                size = in_shape[axis + 1]
                first, last = int(found[:, axis].min()), int(found[:, axis].max())
                if size == 1 < out_shape[axis + 1]:  # broadcast: every output reads it
                    assert first == last == 0
                    continue
                lo = Fraction(o[axis + 1]) * j - p
                hi = lo + r - 1
                assert math.floor(lo) <= first and last <= math.ceil(hi), (o, axis)
                interior = lo.denominator == hi.denominator == 1 and lo >= 0 and hi < size
                if interior and (rule is not pointwise_field or r == 1):
                    assert (first, last) == (lo, hi), (o, axis, first, last, lo, hi)


# -- one test function per family and oracle ------------------------------------------------------

ORACLES: dict[str, tuple[Callable[[Case], None], Callable[[registry.Family], bool]]] = {
    "shape_vs_torch": (check_shape_vs_torch, lambda f: True),
    "counts_vs_reference": (check_counts_vs_reference, lambda f: True),
    "backward_vs_finite_differences": (
        check_backward_vs_finite_differences,
        lambda f: isinstance(f.functional, Mapping),
    ),
    "backward_vs_autograd": (
        check_backward_vs_autograd,
        lambda f: isinstance(f.functional, Mapping),
    ),
    "specfile_round_trip": (check_specfile_round_trip, lambda f: isinstance(f.spec_file, Mapping)),
    "adapter_mapping": (
        check_adapter_mapping,
        lambda f: isinstance(f.torch, registry.TorchMapping),
    ),
    "receptive_field_vs_dependence": (check_receptive_field_vs_dependence, lambda f: True),
}


def _test(check: Callable[[Case], None]) -> Callable[[Case], None]:
    def test(case: Case) -> None:
        check(case)

    return test


for _family in FAMILIES.values():
    for _oracle, (_check, _applies) in ORACLES.items():
        if _applies(_family):
            _name = f"test_{_family.name}_{_oracle}"
            _cases = cases.CASES.get(_family.name, [])
            globals()[_name] = pytest.mark.parametrize("case", _cases, ids=[c.id for c in _cases])(
                _test(_check)
            )
