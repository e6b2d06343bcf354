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
from typing import Any

import numpy as np

from .errors import ConvScopeError
from .export import ExportError, _torch, to_torch
from .optim import Optimizer
from .random import manual_seed
from .train import (
    Progress,
    Result,
    TrainConfig,
    TrainingError,
    check_config,
    layer_table,
    nonfinite_state,
    start_run,
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
    start_run(config)  # bad data or a bad checkpoint is one message here, before any process
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


def _loop(config: TrainConfig, device: Any, quiet: bool, rank: int, world: int) -> Result:
    torch = _torch()
    functional = torch.nn.functional
    distributed = world > 1
    lead = rank == 0
    echo = (lambda text: None) if quiet else print
    log = None if quiet else sys.stderr
    manual_seed(config.seed)
    torch.manual_seed(config.seed)
    run = start_run(config)
    dataset, ours, x_train, y_train = run.dataset, run.model, run.x_train, run.y_train
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
    _restore_moments(optimizer, params, run.optim_state)
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model)
    echo(layer_table(ours, tuple(dataset.image_shape)))
    run.begin(writes=lead)
    rng = np.random.default_rng(config.seed + run.meta["epoch"])
    steps = math.ceil(len(x_train) / config.batch_size)
    stop = run.stop

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
    model.train()
    for epoch in range(run.meta["epoch"] + 1, config.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = run.lr(epoch)
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
        moments = _Saved(_moments(optimizer, params))
        bad = nonfinite_state(ours, moments)  # the NumPy engine's check, on the same state
        if bad is not None:
            raise stop(f"{bad} became NaN or infinite at the end of epoch {epoch}")
        loss_sum, correct, count = (float(v) for v in totals)
        rate = count / max(time.perf_counter() - epoch_start, 1e-9)
        test_acc = held_out_accuracy()
        if distributed:
            extra["replica_max_difference"] = replica_spread()
        progress.show(steps, loss_sum / count, correct / count, rate, final=True,
                      extra=f"  test {100 * test_acc:5.1f}%")  # fmt: skip
        run.end_epoch(epoch, (loss_sum, correct, count), test_acc, moments, lead, extra)
    return run.finish(held_out_accuracy, lead, extra)
