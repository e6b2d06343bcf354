"""``convscope train --engine torch``: the same run, with PyTorch as the engine.

The model is convscope's LeNet exported with ``convscope.export.to_torch``; the data split,
the shuffling, the cosine schedule, the optimiser (PyTorch's Adam and SGD are the rules
convscope's own follow), the progress line, ``metrics.json``, the curves and the checkpoint
format are those of ``convscope.train``. The checkpoint holds convscope's names, so it loads
back into the NumPy engine, and either engine resumes the other's.

``workers > 1`` runs under ``torch.distributed`` with DistributedDataParallel on the gloo
backend, one process per worker: convscope spawns them on this machine, or ``torchrun`` does
(on one machine or several; the environment it sets is read). Every step's batch is the one the
single-process run takes, split across the ranks; DDP averages their gradients, so the update
is the single-process update. Rank 0 alone writes files, atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import data as datasets
from .errors import ConvScopeError
from .export import ExportError, _torch, to_torch
from .module import CheckpointError
from .optim import SGD, Adam, Optimizer
from .random import manual_seed
from .train import (
    CURVES_EVERY_S,
    Progress,
    Result,
    TrainConfig,
    TrainingError,
    _good_checkpoint,
    atomic_write,
    check_config,
    checkpoint_optimizer,
    layer_table,
    lenet,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    write_curves,
)

#: The most worker processes convscope starts on one machine.
MAX_WORKERS = 64


def train_with_torch(
    config: TrainConfig, device: str = "cpu", workers: int = 1, quiet: bool = False
) -> Result:
    """Trains with PyTorch, on ``workers`` processes; the run's Result, as rank 0 saw it."""
    check_config(config)
    torch = _torch()
    if not (isinstance(workers, int) and 1 <= workers <= MAX_WORKERS):
        raise TrainingError(
            f"--workers must be an integer from 1 to {MAX_WORKERS} (processes on this machine; "
            f"torchrun starts ranks on several), got {workers}"
        )
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as error:
        raise TrainingError(f"--device {device!r} is not a torch device: {error}") from None
    if kind not in ("cpu", "cuda", "mps", "xpu"):
        raise TrainingError(f"--device {device!r}: training runs on cpu, cuda, mps or xpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--device {device}: this PyTorch sees no CUDA device")
    if "WORLD_SIZE" in os.environ:  # launched by torchrun: this process is one rank
        if workers != 1:
            raise TrainingError(
                "--workers starts convscope's own processes; under torchrun the ranks are "
                "torchrun's (--nproc-per-node, --nnodes)"
            )
        return _run(config, device, quiet)
    if workers == 1:
        return _run(config, device, quiet, rank=0, world=1)
    _start(config)  # bad data or a bad checkpoint is one message here, before any process
    port = _free_port()
    errors = torch.multiprocessing.get_context("spawn").SimpleQueue()
    # spawn logs a warning as it stops the other ranks; the one-line message below says it
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    try:
        torch.multiprocessing.spawn(
            _spawned,
            args=(config, device, quiet, workers, port, errors),
            nprocs=workers,
            join=True,
        )
    except Exception as failure:  # a rank failed; spawn has stopped the others
        message = errors.get() if not errors.empty() else f"a worker process failed: {failure}"
        raise TrainingError(message.strip().splitlines()[-1]) from None
    written = json.loads((config.out / "metrics.json").read_text())  # rank 0's outcome
    return Result(**{k: v for k, v in written.items() if k in Result.__dataclass_fields__})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(
    rank: int, config: TrainConfig, device: str, quiet: bool, world: int, port: int, errors: Any
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch = _torch()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # the cores, shared
    try:
        _run(config, device, quiet, rank=rank, world=world)
    except ConvScopeError as error:  # the parent says it in one line
        errors.put(str(error))
        raise SystemExit(2) from None


def _moments(optimizer: Any, params: list[Any]) -> dict[str, np.ndarray]:
    """torch's optimiser state under convscope's names (Adam: steps, m.i, v.i; SGD:
    velocity.i), so ``save_checkpoint`` writes the format the NumPy engine reads."""
    state: dict[str, np.ndarray] = {}
    for i, p in enumerate(params):
        slot = optimizer.state.get(p, {})
        if "exp_avg" in slot:
            state["steps"] = np.array(int(slot["step"]))
            state[f"m.{i}"] = slot["exp_avg"].detach().cpu().numpy()
            state[f"v.{i}"] = slot["exp_avg_sq"].detach().cpu().numpy()
        elif slot.get("momentum_buffer") is not None:
            state[f"velocity.{i}"] = slot["momentum_buffer"].detach().cpu().numpy()
    return state


def _restore_moments(optimizer: Any, params: list[Any], state: dict[str, np.ndarray]) -> None:
    """The reverse of ``_moments``, for a resumed run."""
    torch = _torch()
    for i, p in enumerate(params):
        if f"m.{i}" in state:
            optimizer.state[p] = {
                "step": torch.tensor(float(state["steps"])),
                "exp_avg": torch.tensor(state[f"m.{i}"], device=p.device),
                "exp_avg_sq": torch.tensor(state[f"v.{i}"], device=p.device),
            }
        elif f"velocity.{i}" in state:
            optimizer.state[p] = {
                "momentum_buffer": torch.tensor(state[f"velocity.{i}"], device=p.device)
            }


class _Saved(Optimizer):
    """A convscope optimiser that only carries torch's state into ``save_checkpoint``."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, np.ndarray]:
        return self._state


def _run(
    config: TrainConfig, device: str, quiet: bool, rank: int | None = None, world: int = 1
) -> Result:
    torch = _torch()
    dist = torch.distributed
    if rank is None:  # torchrun's environment
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    distributed = world > 1
    if distributed:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    lead = rank == 0
    if distributed and device == "cuda":  # one GPU per process on a machine
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    try:
        return _loop(config, torch.device(device), quiet or not lead, rank, world)
    finally:
        if distributed:
            dist.destroy_process_group()


@dataclass
class _Start:
    """What a run starts from: the data, the model (convscope's LeNet, from the resumed
    checkpoint where one is given) and the checked optimiser state."""

    dataset: Any
    x_train: np.ndarray
    y_train: np.ndarray
    meta: dict[str, Any]
    model: Any
    optim_state: dict[str, np.ndarray]
    history: list[dict]
    good: tuple[Path, int] | None


def _start(config: TrainConfig) -> _Start:
    """The data and the model a run starts from, every resumed state checked as the NumPy
    engine checks it (the optimiser state through convscope's own optimiser)."""
    dataset = datasets.load(config.data)
    x_train, y_train = dataset.train_images, dataset.train_labels
    if config.limit:
        x_train, y_train = x_train[: config.limit], y_train[: config.limit]
    c, h, w = dataset.image_shape
    meta = {"image_shape": [c, h, w], "classes": dataset.classes, "data": dataset.name,
            "seed": config.seed, "epoch": 0, "scale": dataset.scale}  # fmt: skip
    model = lenet(c, h, dataset.classes)  # convscope's model: its initial weights and names
    start = _Start(dataset, x_train, y_train, meta, model, {}, [], None)
    if config.resume is None:
        return start
    saved, model_state, optim_state = load_checkpoint(config.resume)
    if saved["image_shape"] != meta["image_shape"] or saved["classes"] != meta["classes"]:
        raise CheckpointError(
            f"{config.resume} was trained on {saved['data']} images {saved['image_shape']} "
            f"with {saved['classes']} classes, not {dataset.name} {meta['image_shape']}"
        )
    kind = checkpoint_optimizer(optim_state)
    if kind != config.optimizer:
        raise CheckpointError(
            f"{config.resume} was trained with --optimizer {kind}; resume it with "
            f"--optimizer {kind}, not {config.optimizer}"
        )
    model.load_state_dict(model_state)
    ours = Adam if kind == "adam" else SGD
    ours(model.parameters(), lr=config.lr).load_state_dict(optim_state)  # its checks
    history = list(saved.get("history", []))
    if history:  # refused now, not after an epoch's work when curves.png is drawn from it
        from .draw.curves import curve_series

        try:
            curve_series(history)
        except ConvScopeError as error:
            raise CheckpointError(f"{config.resume}: meta {error}") from None
    meta["epoch"] = saved["epoch"]
    start.optim_state, start.history = optim_state, history
    start.good = (config.resume, saved["epoch"])
    return start


def _loop(config: TrainConfig, device: Any, quiet: bool, rank: int, world: int) -> Result:
    torch = _torch()
    functional = torch.nn.functional
    distributed = world > 1
    lead = rank == 0
    echo = (lambda text: None) if quiet else print
    log = None if quiet else sys.stderr
    manual_seed(config.seed)
    torch.manual_seed(config.seed)
    start = _start(config)
    dataset, meta, ours, optim_state = start.dataset, start.meta, start.model, start.optim_state
    x_train, y_train, history, good = start.x_train, start.y_train, start.history, start.good
    c, h, w = dataset.image_shape
    try:
        model = to_torch(ours).to(device)
    except ExportError as error:
        raise TrainingError(str(error)) from error
    params = list(model.parameters())
    optimizer = (
        torch.optim.Adam(params, lr=config.lr)
        if config.optimizer == "adam"
        else torch.optim.SGD(params, lr=config.lr, momentum=0.9)
    )
    _restore_moments(optimizer, params, optim_state)
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model)
    echo(layer_table(ours, (c, h, w)))

    checkpoint, metrics = config.out / "checkpoint.npz", config.out / "metrics.json"
    curves = config.out / "curves.png"
    if lead:
        remove_stale_temporaries(config.out, (checkpoint.name, metrics.name, curves.name))
    rng = np.random.default_rng(config.seed + meta["epoch"])
    started, seen = time.perf_counter(), 0
    steps = math.ceil(len(x_train) / config.batch_size)

    def stop(what: str) -> TrainingError:
        return TrainingError(f"{what}; stopped. {_good_checkpoint(good, checkpoint)}; "
                             "try a smaller --lr")  # fmt: skip

    def result() -> Result:
        seconds = time.perf_counter() - started
        final = history[-1]["test_accuracy"] if history else float("nan")
        return Result(final, meta["epoch"], seconds, seen / max(seconds, 1e-9), history,
                      str(checkpoint), str(metrics), str(curves))  # fmt: skip

    def write_metrics(outcome: Result, extra: dict[str, Any]) -> None:
        payload = json.dumps({**asdict(outcome), **extra}, indent=2)
        atomic_write(metrics, lambda f: f.write(payload), binary=False)

    def held_out_accuracy() -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for s in range(0, len(dataset.test_images), 512):
                x = torch.from_numpy(dataset.test_images[s : s + 512]).to(device)
                logits = model(x)
                if not torch.isfinite(logits).all():
                    raise stop("the model's held-out outputs became NaN or infinite")
                y = torch.from_numpy(dataset.test_labels[s : s + 512]).to(device)
                correct += int((logits.argmax(1) == y).sum())
        model.train()
        return correct / len(dataset.test_images)

    def replica_spread() -> float:
        """The largest difference between any rank's parameters and rank 0's (0 when DDP
        keeps the replicas identical, as it must)."""
        flat = torch.cat([p.detach().reshape(-1) for p in params]).cpu()
        first = flat.clone()
        torch.distributed.broadcast(first, 0)
        spread = (flat - first).abs().max()
        torch.distributed.all_reduce(spread, op=torch.distributed.ReduceOp.MAX)
        return float(spread)

    extra: dict[str, Any] = {"engine": "torch", "device": str(device), "workers": world}
    drawn = -math.inf  # when curves.png was last drawn
    model.train()
    for epoch in range(meta["epoch"] + 1, config.epochs + 1):
        lr = config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = rng.permutation(len(x_train))
        progress = Progress(log, epoch, config.epochs, steps)
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count: every rank's
        epoch_start = time.perf_counter()
        for step in range(steps):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            mine = batch[rank::world]  # this rank's share of the single-process batch
            x = torch.from_numpy(x_train[mine]).to(device)
            y = torch.from_numpy(y_train[mine].astype(np.int64)).to(device)
            logits = net(x)
            loss = functional.cross_entropy(logits, y, reduction="sum")
            # DDP averages gradients over the ranks: scaled so the average is the batch mean
            (loss * world / len(batch)).backward()
            part = torch.tensor(
                [loss.item(), (logits.argmax(1) == y).sum().item(), len(mine)],
                dtype=torch.float64,
            )
            if distributed:
                torch.distributed.all_reduce(part)
            if not math.isfinite(float(part[0])):
                raise stop(f"the loss became {float(part[0]) / part[2]:.4g} at epoch {epoch}, "
                           f"step {step + 1}")  # fmt: skip
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            totals += part
            loss_sum, correct, count = (float(v) for v in totals)
            rate = count / max(time.perf_counter() - epoch_start, 1e-9)
            progress.show(step + 1, loss_sum / count, correct / count, rate)
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        ours.load_state_dict(state)
        moments = _moments(optimizer, params)
        bad = next((k for k, v in {**state, **moments}.items() if not np.isfinite(v).all()), None)
        if bad is not None:
            raise stop(f"{bad} became NaN or infinite at the end of epoch {epoch}")
        loss_sum, correct, count = (float(v) for v in totals)
        seen += int(count)
        rate = count / max(time.perf_counter() - epoch_start, 1e-9)
        test_acc = held_out_accuracy()
        if distributed:
            extra["replica_max_difference"] = replica_spread()
        progress.show(steps, loss_sum / count, correct / count, rate, final=True,
                      extra=f"  test {100 * test_acc:5.1f}%")  # fmt: skip
        history.append({"epoch": epoch, "loss": loss_sum / count,
                        "train_accuracy": correct / count, "test_accuracy": test_acc})  # fmt: skip
        meta.update(epoch=epoch, history=history)
        if lead:
            save_checkpoint(checkpoint, ours, _Saved(moments), meta)
            good = (checkpoint, epoch)
            write_metrics(result(), extra)
            if epoch == config.epochs or time.perf_counter() - drawn >= CURVES_EVERY_S:
                write_curves(curves, history)
                drawn = time.perf_counter()
    outcome = result()
    if not seen:
        outcome.test_accuracy = held_out_accuracy()
    if lead:
        write_metrics(outcome, extra)
        if not seen and history:
            write_curves(curves, history)
    return outcome
