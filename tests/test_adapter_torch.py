"""The PyTorch adapter: torch.nn blocks traced on fake tensors give the totals of the same
networks built in convscope, and MACs equal PyTorch's FlopCounterMode conv + linear count / 2.
The new specs it maps to are checked against literal, instrumented loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from convscope import ConvScopeError, nn, summary
from convscope.adapters.torch import from_torch
from convscope.containers import Graph, Node
from convscope.ops.activation import ElementwiseSpec
from convscope.ops.adaptive_pooling import AdaptivePoolSpec
from convscope.ops.arithmetic import AddSpec, MeanSpec, MulSpec
from convscope.ops.conv import ConvSpec
from convscope.ops.linear import LinearSpec
from convscope.ops.normalization import BatchNormSpec, LayerNormSpec
from convscope.ops.structural import PermuteSpec, ReshapeSpec
from tests.reference.instrumented import Counted, c_sqrt, counting

# -- the torch.nn test models -----------------------------------------------------------------


class ResidualBlock(tnn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c)
        self.conv2 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)  # the input itself is forked


class Inception(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b1 = tnn.Conv2d(6, 4, 1)
        self.b2 = tnn.Sequential(tnn.Conv2d(6, 3, 1), tnn.ReLU(), tnn.Conv2d(3, 5, 3, padding=1))
        self.b3 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1), tnn.Conv2d(6, 2, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], dim=1)


def depthwise_separable() -> tnn.Module:
    return tnn.Sequential(
        tnn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),
        tnn.BatchNorm2d(8),
        tnn.ReLU6(),
        tnn.Conv2d(8, 16, 1, bias=False),
        tnn.BatchNorm2d(16),
        tnn.ReLU6(),
        tnn.AdaptiveAvgPool2d(1),
        tnn.Flatten(),
        tnn.Dropout(0.2),
        tnn.Linear(16, 10),
    )


class SqueezeExcite(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = tnn.Conv2d(4, 8, 3, padding=1)
        self.fc1 = tnn.Linear(8, 2)
        self.fc2 = tnn.Linear(2, 8)

    def forward(self, x):
        x = self.conv(x)
        s = x.mean((2, 3))  # (N, C)
        s = torch.sigmoid(self.fc2(F.silu(self.fc1(s))))
        return x * s.view(s.size(0), -1, 1, 1)  # a broadcast multiplication


class ChannelShuffle(tnn.Module):
    def __init__(self, c: int = 8, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.expand = tnn.Conv2d(c, c, 1, groups=groups, bias=False)
        self.dw = tnn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.project = tnn.Conv2d(c, c, 1, groups=groups, bias=False)

    def forward(self, x):
        y = F.relu(self.expand(x))
        n, c, h, w = y.size()
        y = y.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous()
        y = y.view(n, -1, h, w)
        return self.project(self.dw(y)) + x


class ConvNeXtBlock(tnn.Module):
    """LayerNorm and Linear applied to channel-last tensors, GELU, a permute back."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.dw = tnn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = tnn.LayerNorm(c)
        self.fc1 = tnn.Linear(c, 4 * c)
        self.act = tnn.GELU()
        self.fc2 = tnn.Linear(4 * c, c)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


# -- the same networks, built in convscope ---------------------------------------------------


def conv(*args, **kwargs) -> ConvSpec:
    return ConvSpec.create(2, *args, **kwargs)


def graph(steps: list[tuple[str, object, list[str]]], output: str | None = None) -> Graph:
    nodes = {name: Node(spec, inputs) for name, spec, inputs in steps}
    return Graph(nodes, output or steps[-1][0], "x")


def ours_residual() -> nn.Module:
    c = 8
    branch = nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
    )
    return nn.Sequential(nn.Residual(branch), nn.ReLU())


def ours_inception() -> nn.Module:
    return nn.Concat(
        nn.Conv2d(6, 4, 1),
        nn.Sequential(nn.Conv2d(6, 3, 1), nn.ReLU(), nn.Conv2d(3, 5, 3, padding=1)),
        nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(6, 2, 1)),
    )


def ours_depthwise() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 16, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(16, 10),
    )


def ours_se() -> Graph:
    return graph(
        [
            ("conv", conv(4, 8, 3, padding=1), ["x"]),
            ("mean", MeanSpec((2, 3)), ["conv"]),
            ("fc1", LinearSpec(8, 2), ["mean"]),
            ("silu", ElementwiseSpec("SiLU"), ["fc1"]),
            ("fc2", LinearSpec(2, 8), ["silu"]),
            ("sigmoid", ElementwiseSpec("Sigmoid"), ["fc2"]),
            ("view", ReshapeSpec((8, 1, 1)), ["sigmoid"]),
            ("mul", MulSpec(), ["conv", "view"]),
        ]
    )


def ours_shuffle() -> Graph:
    return graph(
        [
            ("expand", conv(8, 8, 1, groups=2, bias=False), ["x"]),
            ("relu", ElementwiseSpec("ReLU"), ["expand"]),
            ("split", ReshapeSpec((2, 4, 6, 6)), ["relu"]),
            ("swap", PermuteSpec((0, 2, 1, 3, 4)), ["split"]),
            ("merge", ReshapeSpec((8, 6, 6)), ["swap"]),
            ("dw", conv(8, 8, 3, padding=1, groups=8, bias=False), ["merge"]),
            ("project", conv(8, 8, 1, groups=2, bias=False), ["dw"]),
            ("add", AddSpec(), ["project", "x"]),
        ]
    )


def ours_convnext() -> Graph:
    return graph(
        [
            ("dw", conv(8, 8, 7, padding=3, groups=8), ["x"]),
            ("last", PermuteSpec((0, 2, 3, 1)), ["dw"]),
            ("norm", LayerNormSpec((8,)), ["last"]),
            ("fc1", LinearSpec(8, 32), ["norm"]),
            ("gelu", ElementwiseSpec("GELU"), ["fc1"]),
            ("fc2", LinearSpec(32, 8), ["gelu"]),
            ("first", PermuteSpec((0, 3, 1, 2)), ["fc2"]),
            ("add", AddSpec(), ["x", "first"]),
        ]
    )


CASES = {
    "residual": (ResidualBlock, ours_residual, (8, 6, 6)),
    "inception": (Inception, ours_inception, (6, 7, 7)),
    "depthwise_separable": (depthwise_separable, ours_depthwise, (8, 9, 9)),
    "squeeze_excite": (SqueezeExcite, ours_se, (4, 5, 5)),
    "channel_shuffle": (ChannelShuffle, ours_shuffle, (8, 6, 6)),
    "convnext": (ConvNeXtBlock, ours_convnext, (8, 6, 6)),
}


def totals(report) -> tuple:
    c = report.cost
    return (
        report.total_params,
        report.total_buffers,
        report.total_macs,
        c.forward,
        c.backward_input,
        c.backward_weight,
        c.backward_bias,
        report.layers[0].output_shape,
    )


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize(("batch", "count"), [(1, "exact"), (3, "dense")])
def test_traced_totals_equal_the_convscope_network(name, batch, count):
    make, ours, shape = CASES[name]
    with torch.device("meta"):
        model = make()
    theirs = summary(model, shape, batch, count)
    assert theirs.unsupported == []
    assert totals(theirs) == totals(summary(ours(), shape, batch, count))
    # PyTorch's own parameter and buffer sizes
    assert theirs.total_params == sum(p.numel() for p in model.parameters())
    assert theirs.total_buffers == sum(b.numel() for b in model.buffers())
    # no weight was materialised: the model is still on the meta device
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("name", CASES)
def test_macs_equal_flop_counter_over_two(name):
    make, _, shape = CASES[name]
    torch.manual_seed(0)
    model = make()
    x = torch.randn(2, *shape)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
    report = summary(model, shape, batch=2)
    assert counter.get_total_flops() % 2 == 0
    assert report.total_macs == counter.get_total_flops() // 2 > 0
    assert (2, *report.layers[0].output_shape) == tuple(out.shape)


def test_graph_steps_name_modules_and_functions():
    g = from_torch(ChannelShuffle(), (8, 6, 6))
    kinds = {name: node.kind for name, node in g.nodes.items()}
    assert kinds["expand"] == "Conv2d" and kinds["dw"] == "Conv2d"
    assert [k for k in kinds.values() if k in ("Reshape", "Permute")] == [
        "Reshape",
        "Permute",
        "Reshape",
    ]
    assert isinstance(g.nodes["dw"].spec, ConvSpec) and g.nodes["dw"].spec.groups == 8


class Unsupported(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = tnn.Conv2d(4, 8, 3, padding=1)
        self.scale = tnn.Parameter(torch.ones(1, 8, 1, 1))

    def forward(self, x):
        y = torch.cumsum(self.conv(x), dim=1)  # no family counts a cumulative sum
        y = y - self.scale  # a parameter read by an operation without a rule
        return F.relu(y)


def test_unsupported_operations_are_listed_by_name():
    report = summary(Unsupported(), (4, 6, 6))
    listed = "\n".join(report.unsupported)
    assert len(report.unsupported) == 2
    assert "torch.cumsum" in listed and "Tensor.sub" in listed
    # the shapes go on through the placeholders, and the table says what was left out
    assert report.layers[-1].output_shape == (8, 6, 6)
    assert "NOT COUNTED" in report.table()
    assert report.to_dict()["unsupported"] == report.unsupported
    # the 8 of 'scale' are on the row of the sub that reads them: parameters never go missing
    assert report.total_params == 8 * 4 * 9 + 8 + 8
    assert [r.params for r in report.layers if r.name == "sub"] == [8]


class Halves(tnn.Module):
    """A chunk along the channels, each half through its own layer."""

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = tnn.Conv2d(2, 3, 1), tnn.Conv2d(4, 3, 1)

    def forward(self, x):
        a, b = torch.split(x, [2, 4], dim=1)
        return torch.cat((self.left(a), self.right(b)), 1).flatten(1)


def test_chunk_and_split_become_slices():
    g = from_torch(Halves(), (6, 5, 5))
    slices = [n.spec for n in g.nodes.values() if n.kind == "Slice"]
    assert [(s.dim, s.start, s.stop) for s in slices] == [(1, 0, 2), (1, 2, 6)]
    assert g.output_shape((6, 5, 5)) == (6 * 25,)
    assert g.unsupported == []


def test_from_torch_needs_an_input_shape_and_a_traceable_model():
    with pytest.raises(ConvScopeError, match="input shape"):
        from_torch(ResidualBlock())

    class Branchy(tnn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ConvScopeError, match="Branchy fails .* branches on the values"):
        from_torch(Branchy(), (3, 4, 4))
    with pytest.raises(ConvScopeError, match="fails on an input of shape"):
        from_torch(ResidualBlock(), (3, 6, 6))  # 3 channels for an 8-channel conv


def test_cli_summary_of_a_python_file(tmp_path, capsys):
    from convscope.cli import main

    file = tmp_path / "mine.py"
    file.write_text(
        "import torch.nn as tnn\n"
        "def model():\n"
        "    return tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.ReLU(), tnn.Flatten(),\n"
        "                          tnn.Linear(4 * 6 * 6, 2))\n"
    )
    main(["summary", f"{file}:model", "--input", "3x8x8", "--json"])
    out = capsys.readouterr().out
    import json

    report = json.loads(out)
    assert report["total_params"] == 4 * 3 * 9 + 4 + 144 * 2 + 2
    assert report["total_macs"] == 4 * 3 * 9 * 36 + 144 * 2
    assert report["unsupported"] == []


# -- the new specs against literal, instrumented loops -----------------------------------------


def counted(shape, seed):
    values = np.random.default_rng(seed).standard_normal(shape)
    out = np.empty(shape, dtype=object)
    for i in np.ndindex(*shape):
        out[i] = Counted(values[i])
    return out


def tally(c) -> dict:
    return {k: v for k, v in c.as_dict().items() if v}


def nonzero(count) -> dict:
    return {k: v for k, v in count.to_dict(keys=()).items() if k != "upper_bound"}


@pytest.mark.parametrize(("a", "b"), [((3, 2, 2), (3, 1, 1)), ((2, 3), (2, 3)), ((1, 4), (3, 1))])
@pytest.mark.parametrize("batch", [1, 2])
def test_mul_counts(a, b, batch):
    x, y, out = counted((batch, *a), 0), counted((batch, *b), 1), MulSpec().output_shape([a, b])
    gy = counted((batch, *out), 2)
    with counting() as fwd:
        np.multiply(x, y)  # object arrays: each product is one counted multiplication
    with counting() as back:
        for operand, other in ((x, y), (y, x)):
            terms = gy * np.broadcast_to(other, gy.shape)
            axes = tuple(i for i, s in enumerate(operand.shape) if s == 1 and gy.shape[i] != 1)
            for entry in np.ndindex(*operand.shape):  # a sum of r terms: r − 1 additions
                picks = [range(gy.shape[i]) if i in axes else [v] for i, v in enumerate(entry)]
                total = None
                for idx in itertools.product(*picks):
                    total = terms[idx] if total is None else total + terms[idx]
    cost = MulSpec().cost([a, b], batch)
    assert nonzero(cost.forward) == tally(fwd)
    assert nonzero(cost.backward_input) == tally(back)


@pytest.mark.parametrize(
    ("shape", "dims", "keepdim"), [((3, 4, 2), (2, 3), True), ((3, 4), (1,), False)]
)
def test_mean_counts(shape, dims, keepdim):
    batch = 2
    x = counted((batch, *shape), 0)
    with counting() as fwd:
        axes = tuple(d for d in dims)
        rest = [i for i in range(x.ndim) if i not in axes]
        for outer in np.ndindex(*(x.shape[i] for i in rest)):
            total = None
            for inner in np.ndindex(*(x.shape[i] for i in axes)):
                idx = [0] * x.ndim
                for i, v in zip(rest, outer):
                    idx[i] = v
                for i, v in zip(axes, inner):
                    idx[i] = v
                total = x[tuple(idx)] if total is None else total + x[tuple(idx)]
            total / len(list(np.ndindex(*(x.shape[i] for i in axes))))
    spec = MeanSpec(dims, keepdim)
    out = spec.output_shape(shape)
    gy = counted((batch, *out), 1)
    n = int(np.prod([shape[d - 1] for d in dims]))
    with counting() as back:
        for i in np.ndindex(*gy.shape):
            gy[i] / n  # then copied to the n inputs
    cost = spec.cost(shape, batch)
    assert nonzero(cost.forward) == tally(fwd)
    assert nonzero(cost.backward_input) == tally(back)
    assert spec.output_shape(shape) == tuple(
        torch.zeros(batch, *shape).mean(dims, keepdim).shape[1:]
    )


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_counts(affine, bias):
    batch, shape, norm = 2, (3, 4), (4,)
    x, gy = counted((batch, *shape), 0), counted((batch, *shape), 1)
    gamma, beta = counted(norm, 2), counted(norm, 3)
    rows = list(np.ndindex(batch, 3))
    m, saved = 4, {}
    with counting() as fwd:
        for r in rows:
            vals = [x[r][j] for j in range(m)]
            mean = sum(vals[1:], vals[0]) / m
            cen = [v - mean for v in vals]
            sq = [c * c for c in cen]
            inv = 1.0 / c_sqrt(sum(sq[1:], sq[0]) / m + 1e-5)
            xhat = [c * inv for c in cen]
            if affine:
                xhat_out = [h * gamma[j] for j, h in enumerate(xhat)]
                if bias:
                    xhat_out = [h + beta[j] for j, h in enumerate(xhat_out)]
            saved[r] = (xhat, inv)
    with counting() as back:
        for r in rows:
            xhat, inv = saved[r]
            g = [gy[r][j] * gamma[j] for j in range(m)] if affine else [gy[r][j] for j in range(m)]
            s1 = sum(g[1:], g[0])
            p = [a * h for a, h in zip(g, xhat)]
            s2 = sum(p[1:], p[0])
            coef = inv / m
            [coef * ((m * a - s1) - h * s2) for a, h in zip(g, xhat)]
    with counting() as weight:
        for j in range(m):
            terms = [gy[r][j] * saved[r][0][j] for r in rows]
            sum(terms[1:], terms[0])
    spec = LayerNormSpec(norm, elementwise_affine=affine, bias=bias)
    cost = spec.cost(shape, batch)
    assert nonzero(cost.forward) == tally(fwd)
    assert nonzero(cost.backward_input) == tally(back)
    assert (cost.backward_weight is not None) == affine
    if affine:
        assert nonzero(cost.backward_weight) == tally(weight)
        assert (cost.backward_bias is not None) == bias
    if affine and bias:
        assert cost.backward_bias.adds == m * (len(rows) - 1)
    torch_norm = tnn.LayerNorm(norm, elementwise_affine=affine, bias=bias)
    assert spec.params().params == sum(p.numel() for p in torch_norm.parameters())


def test_batch_norm_and_layer_norm_share_their_per_group_rule():
    # one row of m values (LayerNorm) is counted as one channel of m values (BatchNorm)
    ln = LayerNormSpec((5, 4)).cost((5, 4), batch=1)
    bn = BatchNormSpec(1, 1).cost((1, 20), batch=1)
    assert (ln.forward, ln.backward_input) == (bn.forward, bn.backward_input)


def test_adaptive_avg_pool_to_one_equals_the_spatial_mean():
    pool = AdaptivePoolSpec.create(2, "avg", 1).cost((3, 5, 4), batch=2)
    mean = MeanSpec((2, 3), keepdim=True).cost((3, 5, 4), batch=2)
    assert (pool.forward, pool.backward_input) == (mean.forward, mean.backward_input)


@pytest.mark.parametrize(
    "slices",
    [[(0, 3), (3, 6)], [(0, 4), (2, 6)], [(1, 2)], [(0, 6), (0, 6), (2, 5)]],
    ids=["disjoint", "overlapping", "one", "nested"],
)
@pytest.mark.parametrize("whole", [0, 1, 2])
def test_gradient_sums_of_slices_and_readers_count_each_entry(slices, whole):
    """The adds that sum the gradients written into one tensor, against a count per entry."""
    from convscope.containers import gradient_sum_adds
    from convscope.ops.structural import SliceSpec

    shape = (6, 3)
    writes = np.full(shape, whole)
    for start, stop in slices:
        writes[start:stop] += 1
    expected = int(np.maximum(writes - 1, 0).sum())
    readers = [SliceSpec(1, a, b) for a, b in slices] + [AddSpec()] * whole
    assert gradient_sum_adds(shape, readers) == (expected, False)
