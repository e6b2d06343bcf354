"""The recording run of the PyTorch adapter: a ``TorchFunctionMode`` and module hooks that turn
each call of one shape-only forward pass into a graph step, with its parameters."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as tnn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .. import registry
from ..containers import Graph, Node, OnParametersSpec, OpaqueSpec, ParamsRow, RegroupSpec
from ..counting import ParamCount
from ..errors import ConvScopeError
from ..geometry import Shape
from ..ops.base import Op
from ..ops.structural import SliceSpec, batch_free_dim
from .torch_calls import (
    RUN_BATCH,
    call_path,
    composite,
    dtype_name,
    tables,
    torch_base,
)


class ModelFailed(Exception):
    """The model's own forward raised on shape-only tensors."""


class RecorderError(Exception):
    """convscope's own recording failed (a bug, never the model's): raised as it is."""


class Recorder(TorchFunctionMode):
    """Runs the model once and records every call on tensors computed from the input."""

    def __init__(self, root: tnn.Module, shape: Shape, device: str) -> None:
        super().__init__()
        self.root, self.shape, self.device = root, shape, device
        self.paths = {id(m): name for name, m in root.named_modules(remove_duplicate=False)}
        self.nodes: dict[str, Node] = {}
        self.shapes: dict[str, Shape] = {}
        self.unsupported: list[str] = []
        self.steps: dict[int, str] = {}  # id of a tensor computed from the input → its step
        self.constants: dict[int, frozenset[str]] = {}  # other tensors → tensors they read
        self.keep: list[Any] = []  # every tensor seen, so that no id is reused
        self.scope: list[str] = []  # the module paths being run
        self.frames: list[Any] = []  # per module entered: (path, spec, kind), or None inside
        self.inside = 0  # recognised layers being run
        self.claimed: dict[str, str] = {}  # parameter or buffer → the step that reads it
        self.parts: set[str] = set()  # slices made for the parts of a chunk or split

    # -- the run --------------------------------------------------------------------------
    def run(self) -> Graph:
        tensors, self.owners, self.sizes = self._tensors()
        self.members: dict[str, list[str]] = {}  # module path → the tensors it holds
        for name, owner in self.owners.items():
            parts = name.split(".")
            for k in range(len(parts)):
                self.members.setdefault(".".join(parts[:k]), []).append(owner)
        hooks, training = self._hooks(), {m: m.training for m in self.root.modules()}
        shortcuts = self._shortcuts()
        self.root.eval()
        try:
            context = self._context()
            with context:
                x = torch.empty((RUN_BATCH, *self.shape), device=self._device())
                self.keep.append(x)
                self.steps[id(x)] = "input"
                self.shapes["input"] = self.shape
                try:
                    with self:
                        out = torch.func.functional_call(self.root, tensors, (x,), strict=False)
                except (ConvScopeError, RecorderError):
                    raise
                except Exception as error:
                    raise ModelFailed() from error
        finally:
            for m in shortcuts:
                del m.forward
            for handle in hooks:
                handle.remove()
            for m, flag in training.items():
                m.training = flag
        return self._graph(out)

    def _context(self) -> Any:
        if self.device == "meta":
            return torch.device("meta")
        from torch._subclasses.fake_tensor import FakeTensorMode

        return FakeTensorMode(allow_non_fake_inputs=True)

    def _device(self) -> str:
        if self.device == "meta":
            return "meta"
        first = next(iter([*self.root.parameters(), *self.root.buffers()]), None)
        return "cpu" if first is None or first.is_meta else str(first.device)

    def _tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, ParamCount]]:
        """Shape-only stand-ins for the model's parameters and buffers, a tied tensor once,
        each known by its first name."""
        stand_ins: dict[int, torch.Tensor] = {}
        names: dict[str, torch.Tensor] = {}
        owners: dict[str, str] = {}  # every name → the first name of its tensor
        sizes: dict[str, ParamCount] = {}
        first: dict[int, str] = {}
        kinds = [(n, t, "p") for n, t in self.root.named_parameters(remove_duplicate=False)]
        kinds += [(n, t, "b") for n, t in self.root.named_buffers(remove_duplicate=False)]
        for name, t, kind in kinds:
            if id(t) not in stand_ins:
                device = "meta" if self.device == "meta" else t.device
                stand_ins[id(t)] = torch.empty(t.shape, dtype=t.dtype, device=device)
                stand_ins[id(t)].requires_grad_(False)
                first[id(t)] = name
                n = t.numel()
                trainable = kind == "p" and t.requires_grad
                sizes[name] = ParamCount(
                    weights=n if kind == "p" and not name.endswith("bias") else 0,
                    biases=n if kind == "p" and name.endswith("bias") else 0,
                    buffers=n if kind == "b" else 0,
                    frozen=0 if trainable or kind == "b" else n,
                )
            names[name] = stand_ins[id(t)]
            owners[name] = first[id(t)]
            self.constants[id(stand_ins[id(t)])] = frozenset({first[id(t)]})
        self.keep.extend(stand_ins.values())
        return names, owners, sizes

    def _shortcuts(self) -> list[tnn.Module]:
        """Recognised layers answer with a shape-only tensor of their rule's output shape
        instead of running torch's kernels for shapes (PyTorch's shape rules are the contract
        test's oracle for ours); a call the rule does not take runs as written."""
        patched = []
        for m in self.root.modules():
            if torch_base(m) is None or "forward" in m.__dict__:
                continue
            m.forward = functools.partial(self._shortcut, m.forward)
            patched.append(m)
        return patched

    def _shortcut(self, forward: Any, *args: Any, **kwargs: Any) -> Any:
        frame = self.frames[-1] if self.frames else None
        if frame is None or frame[1] is False:
            return forward(*args, **kwargs)
        spec, x = frame[1], args[0]
        if spec is None:
            return x
        try:
            out = spec.output_shape(tuple(x.shape[1:]))
        except ConvScopeError:
            return forward(*args, **kwargs)
        return x.new_empty((x.shape[0], *out))

    def _hooks(self) -> list[Any]:
        handles = []
        for m in self.root.modules():
            handles.append(m.register_forward_pre_hook(self._enter, with_kwargs=True))
            handles.append(m.register_forward_hook(self._leave, with_kwargs=True, always_call=True))
        return handles

    # -- modules ----------------------------------------------------------------------------
    def _enter(self, module: tnn.Module, args: tuple, kwargs: dict) -> None:
        if self.inside:  # inside a recognised layer: nothing below it is recorded
            self.frames.append(None)
            return
        path = self.paths.get(id(module), type(module).__name__)
        base = torch_base(module)
        if base is not None and len(args) == 1 and not kwargs and self._step(args[0]):
            try:
                spec = base[1](module)
            except registry.Unsupported:
                pass  # configured beyond the family's rule: its calls are recorded one by one
            else:
                self.inside += 1
                self.frames.append((path, spec, base[0]))
                self.scope.append(path)
                return
        self.frames.append((path, False, ""))
        self.scope.append(path)

    def _leave(self, module: tnn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        frame = self.frames.pop()
        if frame is None:
            return
        path, spec, kind = frame
        self.scope.pop()
        if spec is False:
            return
        self.inside -= 1
        if out is None:  # the forward raised: the run fails with the model's own error
            return
        x = self._step(args[0])
        self.keep.append(out)
        if spec is None:  # the layer is its input (Identity, Dropout in eval)
            self._bind(out, x)
            return
        params = self._claim(self.members.get(path, []))
        label = f"{type(module).__qualname__} ('{path}')"
        self._emit(path or kind.lower(), spec, [x], out, kind, label, params)

    # -- calls ------------------------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not self.inside and composite(func) and self._reads_input((args, kwargs)):
            return self._descend(func, args, kwargs)
        out = func(*args, **kwargs)
        if self.inside:
            return out
        try:
            self._record(func, args, kwargs, out)
        except ConvScopeError:
            raise
        except Exception as error:
            raise RecorderError(f"recording {call_path(func)}: {error!r}") from error
        return out

    def _reads_input(self, value: Any) -> bool:
        flat, _ = tree_flatten(value)
        return any(isinstance(t, torch.Tensor) and id(t) in self.steps for t in flat)

    def _descend(self, func: Any, args: Any, kwargs: dict) -> Any:
        """A torch.nn.functional function without a rule, run with its own calls recorded
        (multi_head_attention_forward: its linears, matmuls and softmax). Its first check for
        an override is answered "none", or it would hand itself straight back to this mode."""
        names = ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic")
        real = {name: getattr(F, name) for name in names}
        pending = [True]

        def once(check: Any) -> Any:
            def answer(*values: Any) -> bool:
                if pending:
                    pending.clear()
                    return False
                return check(*values)

            return answer

        for name in names:
            setattr(F, name, once(real[name]))
        try:
            with self:
                return func(*args, **kwargs)
        finally:
            for name in names:
                setattr(F, name, real[name])

    def _record(self, func: Any, args: Any, kwargs: dict, out: Any) -> None:
        flat_in, _ = tree_flatten((args, kwargs))
        tensors_in = [t for t in flat_in if isinstance(t, torch.Tensor)]
        flat_out, _ = tree_flatten(out)
        tensors_out = [t for t in flat_out if isinstance(t, torch.Tensor)]
        inputs = [t for t in tensors_in if id(t) in self.steps]
        rules, parts, moves, shape_only = tables()
        if not inputs or func in shape_only:
            reads = frozenset().union(*(self.constants.get(id(t), ()) for t in tensors_in))
            for t in tensors_out:
                if id(t) not in self.steps:
                    self.constants[id(t)] = reads
                    self.keep.append(t)
            if not inputs and tensors_in and tensors_out and reads:
                self._on_parameters(func, args, kwargs, out, tensors_in)
            return
        if not tensors_out:
            name = getattr(func, "__name__", "")
            if (name.endswith("_") and not name.startswith("__")) or name == "__setitem__":
                self._opaque(call_path(func), func.__name__, args[0], tensors_in, "writes in place")
            return
        self.keep.extend(tensors_out)
        try:
            if func in parts:
                self._parts(args, kwargs, out)
            elif func in rules:
                path, rule = rules[func]
                self._call(path, rule, args, kwargs, out, tensors_in, func in moves)
            elif func in moves:
                self._regroup(call_path(func), tensors_in, out)
            elif func is torch.Tensor.__getitem__:
                self._getitem(args, out, tensors_in)
            else:
                raise registry.Unsupported("")
        except ConvScopeError as why:
            for t in tensors_out:
                self._opaque(call_path(func), func.__name__, t, tensors_in, str(why))

    def _call(
        self,
        path: str,
        rule: registry.CallRule,
        args: Any,
        kwargs: dict,
        out: Any,
        tensors_in: list,
        moves: bool,
    ) -> None:
        """A call with a family's rule, its tensors replaced by shape placeholders."""
        if not isinstance(out, torch.Tensor):
            raise registry.Unsupported("a result that is not one tensor")
        call, operands, reads = self._torch_call(args, kwargs, out, self._step)
        try:
            spec = rule(call)
        except registry.Unsupported:
            if moves:
                self._regroup(path, tensors_in, out)
                return
            raise
        if spec is None:
            self._bind(out, operands[0])
            return
        name = path.rsplit(".", 1)[-1]
        try:
            self._emit(name, spec, operands, out, None, path, self._claim(reads))
        except registry.Unsupported:
            if not moves:
                raise
            self._regroup(path, tensors_in, out)

    def _torch_call(
        self, args: Any, kwargs: dict, out: torch.Tensor, step_of: Any
    ) -> tuple[registry.TorchCall, list[str], list[str]]:
        """The call as a family rule sees it: each tensor ``step_of`` names as a ``Tensor``
        placeholder (its shape without the leading axis), every other one as a ``Constant``;
        with the steps read and the parameters read."""
        operands: list[str] = []
        reads: list[str] = []

        def plain(value: Any) -> Any:
            if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
                return type(value)(plain(v) for v in value)
            if not isinstance(value, torch.Tensor):
                return value
            step = step_of(value)
            if step is not None:
                operands.append(step)
                return registry.Tensor(self.shapes[step], dtype_name(value))
            sources = self.constants.get(id(value), frozenset())
            reads.extend(sources)
            return registry.Constant(tuple(value.shape), tuple(sorted(sources)), dtype_name(value))

        flat = plain(tuple(args))
        named = {k: plain(v) for k, v in kwargs.items()}
        first = next(
            (i for i, a in enumerate(flat) if isinstance(a, (registry.Tensor, list, tuple))), 0
        )
        if not operands:
            raise registry.Unsupported("no operand computed from the input")
        shapes = tuple(self.shapes[o] for o in operands)
        group = tuple(flat[first]) if isinstance(flat[first], (list, tuple)) else ()
        call = registry.TorchCall(
            flat[first + 1 :], named, shapes, self._free(out), flat[:first], group
        )
        return call, operands, reads

    def _on_parameters(self, func: Any, args: Any, kwargs: dict, out: Any, tensors: list) -> None:
        """A call with a rule on the model's own tensors only (a relative-position MLP on a
        coordinate table): counted once per forward on a row of its own, its result still a
        constant for the rest of the network. Without a rule it is listed."""
        rules, parts, moves, _ = tables()
        if func in moves or func in parts or func is torch.Tensor.__getitem__:
            return  # values moved: nothing to count
        path = call_path(func)
        lead = next((t for t in tensors if t.dim() > 0), None)
        try:
            if func not in rules or lead is None or not isinstance(out, torch.Tensor):
                raise registry.Unsupported("")
            if func is torch.einsum:
                work, reads = self._einsum_on_parameters(args, kwargs)
                expected = tuple(int(v) for v in out.shape)
            else:
                key = "(parameters)"
                self.shapes[key] = tuple(int(v) for v in lead.shape[1:])
                try:
                    call, _, reads = self._torch_call(
                        args, kwargs, out, lambda t: key if t is lead else None
                    )
                    spec = rules[func][1](call)
                    shapes = call.operands[0] if len(call.operands) == 1 else call.operands
                finally:
                    del self.shapes[key]
                if spec is None:
                    return
                work, expected = OnParametersSpec(spec, shapes, int(lead.shape[0])), self._free(out)
            shape = work.output_shape(())
            if shape != expected:
                raise registry.Unsupported("its shape rule differs from the run's")
        except ConvScopeError as why:
            reason = f", {why}" if str(why) else ""
            self.unsupported.append(f"{path}{self._where()} (on parameters{reason})")
            return
        name = self._name(path.rsplit(".", 1)[-1])
        self._store(name, Node(work, [], work.name, params=self._claim(reads)))
        self.shapes[name] = shape

    def _einsum_on_parameters(self, args: Any, kwargs: dict) -> tuple[OnParametersSpec, list]:
        """einsum of parameter tables (MaxViT's relative bias): its operands whole, the
        equation given a batch letter of its own that every operand and the output share."""
        equation, *operands = args
        if kwargs or not isinstance(equation, str) or "->" not in equation:
            raise registry.Unsupported("an einsum without an explicit output")
        equation = equation.replace(" ", "")
        free = next(c for c in "ZYXWVUTSRQ" if c not in equation)
        inputs, output = equation.split("->")
        batched = ",".join(free + term for term in inputs.split(",")) + "->" + free + output
        call = registry.TorchCall(
            (), {}, tuple(tuple(int(v) for v in t.shape) for t in operands), (), (batched,)
        )
        spec = tables()[0][torch.einsum][1](call)
        _, reads = self._sources(operands)
        return OnParametersSpec(spec, list(call.operands), 1), reads

    def _parts(self, args: Any, kwargs: dict, out: Any) -> None:
        """chunk and split: each part a slice along the axis."""
        x = self._step(args[0])
        if x is None:
            raise registry.Unsupported("parts of a tensor not computed from the input")
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        resolved = batch_free_dim(dim, len(self.shapes[x]) + 1)
        start = 0
        for part in out:
            stop = start + part.shape[resolved]
            self._emit("slice", SliceSpec(resolved, start, stop), [x], part, None, "slice")
            self.parts.add(self.steps[id(part)])
            start = stop

    def _getitem(self, args: Any, out: torch.Tensor, tensors_in: list) -> None:
        """Basic indexing: one contiguous slice of one axis is a Slice; any other index only
        moves values (a regrouping)."""
        x, index = self._step(args[0]), args[1]
        index = index if isinstance(index, tuple) else (index,)
        cut = [
            (d, i) for d, i in enumerate(index) if not (isinstance(i, slice) and i == slice(None))
        ]
        if (
            x is not None
            and len(cut) == 1
            and cut[0][0] > 0
            and isinstance(cut[0][1], slice)
            and cut[0][1].step in (None, 1)
        ):
            d, s = cut[0]
            start, stop, _ = s.indices(args[0].shape[d])
            self._emit("slice", SliceSpec(d, start, stop), [x], out, None, "Tensor.__getitem__")
            return
        self._regroup("Tensor.__getitem__", tensors_in, out)

    # -- steps ------------------------------------------------------------------------------
    def _step(self, value: Any) -> str | None:
        return self.steps.get(id(value)) if isinstance(value, torch.Tensor) else None

    def _bind(self, t: torch.Tensor, step: str) -> None:
        self.steps[id(t)] = step
        self.keep.append(t)

    def _free(self, t: torch.Tensor) -> Shape:
        """A tensor's shape without its leading (batch) axis."""
        if t.dim() == 0:
            raise registry.Unsupported("a result with no batch axis (a scalar)")
        return tuple(int(v) for v in t.shape[1:])

    def _name(self, name: str) -> str:
        scope = self.scope[-1] if self.scope else ""
        if "." not in name and scope and not name.startswith(scope):
            name = f"{scope}.{name}"
        base, i = name, 1
        while name in self.shapes:
            name, i = f"{base}_{i}", i + 1
        return name

    def _claim(self, names: Sequence[str]) -> ParamCount | None:
        """The parameters and buffers ``names`` that no earlier row has read: a shared tensor
        belongs to the first row that reads it."""
        total = ParamCount()
        for name in dict.fromkeys(self.owners.get(n, n) for n in names):
            if name not in self.claimed and name in self.sizes:
                self.claimed[name] = ""  # the step is named when it is stored
                total = total + self.sizes[name]
        return total

    def _store(self, step: str, node: Node) -> None:
        """Adds a step; the tensors just claimed are its."""
        self.nodes[step] = node
        for name, owner in self.claimed.items():
            if not owner:
                self.claimed[name] = step

    def _emit(
        self,
        name: str,
        spec: Op,
        inputs: Sequence[str],
        out: torch.Tensor,
        kind: str | None,
        label: str,
        params: ParamCount | None = None,
    ) -> None:
        """A step, after checking that convscope's shape is the one the run produced."""
        expected = self._free(out)
        given = [self.shapes[i] for i in inputs]
        try:
            found = spec.output_shape(given[0] if len(given) == 1 else given)
        except ConvScopeError as error:
            raise registry.Unsupported(str(error)) from error
        if found != expected:
            raise registry.Unsupported(
                f"convscope's shape {found} differs from the run's {expected}"
            )
        self._add(name, spec, list(inputs), out, kind, params)

    def _add(
        self,
        name: str,
        spec: Op,
        inputs: list[str],
        t: torch.Tensor,
        kind: str | None,
        params: ParamCount | None,
    ) -> None:
        """Stores the step that computed ``t``, run once per entry of its leading axis."""
        step = self._name(name)
        runs = int(t.shape[0]) // RUN_BATCH
        self._store(step, Node(spec, inputs, kind, params=params, repeat=runs))
        self.shapes[step] = self._free(t)
        self._bind(t, step)

    def _sources(self, tensors: list) -> tuple[list[str], list[str]]:
        """The steps and the parameters a call's tensors read."""
        steps = list(dict.fromkeys(s for t in tensors if (s := self._step(t)) is not None))
        reads = [n for t in tensors for n in self.constants.get(id(t), ())]
        return steps, reads

    def _where(self) -> str:
        """`` in 'module.path'`` for the module being run, for a listed call."""
        return f" in '{self.scope[-1]}'" if self.scope and self.scope[-1] else ""

    def _regroup(self, path: str, tensors_in: list, out: Any) -> None:
        """Values moved across the batch axis: no arithmetic, receptive field unknown."""
        steps, reads = self._sources(tensors_in)
        flat, _ = tree_flatten(out)
        for t in (t for t in flat if isinstance(t, torch.Tensor)):
            part = len(flat) > 1 or path.endswith("__getitem__")
            spec = RegroupSpec(path, self._free(t), part)
            self._add(path.rsplit(".", 1)[-1], spec, steps, t, None, self._claim(reads))

    def _opaque(self, path: str, name: str, t: Any, tensors_in: list, why: str) -> None:
        """A call without a rule: listed, its output passed on with the run's shape."""
        steps, reads = self._sources(tensors_in)
        label = f"{path}{self._where()}"
        self.unsupported.append(label + (f" ({why})" if why else ""))
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return
        kind = f"{path.rsplit('.', 1)[-1]} (not counted)"
        spec = OpaqueSpec(label, self._free(t))
        self._add(name, spec, steps or ["input"], t, kind, self._claim(reads))

    # -- the graph --------------------------------------------------------------------------
    def _graph(self, out: Any) -> Graph:
        flat, _ = tree_flatten(out)
        found = next((s for t in flat if (s := self._step(t)) is not None), None)
        if found is None:
            raise ConvScopeError(
                f"{type(self.root).__name__} returns no tensor computed from its input"
            )
        read = {i for node in self.nodes.values() for i in node.inputs} | {found}
        for unused in self.parts - read:  # a part the model never reads costs nothing
            del self.nodes[unused]
        extra = []
        for name in (n for n in self.sizes if n not in self.claimed):
            # a tensor no call read (num_batches_tracked) is its module's: on the step that
            # read a sibling, or else on a row of its own
            module = name.rpartition(".")[0]
            step = next(
                (s for n, s in self.claimed.items() if n.rpartition(".")[0] == module and s),
                None,
            )
            if step is None or step not in self.nodes:
                extra.append(ParamsRow(name, self.sizes[name]))
            else:
                node = self.nodes[step]
                node.own_params = (node.own_params or ParamCount()) + self.sizes[name]
        how = "run once on meta tensors" if self.device == "meta" else "run once on fake tensors"
        return Graph(self.nodes, found, "input", self.unsupported, params=extra, method=how)
