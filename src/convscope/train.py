"""The main job: train a small LeNet-style CNN, with checkpoints and metrics written atomically."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import data as datasets
from . import nn
from .containers import Sequential
from .errors import ConvScopeError
from .module import CheckpointError
from .ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from .optim import SGD, Adam, Optimizer
from .random import manual_seed
from .text import columns

CHECKPOINT_FORMAT = "convscope-checkpoint-1"


class TrainingError(ConvScopeError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


def lenet(in_channels: int, size: int, classes: int) -> Sequential:
    """LeNet-style: two conv + ReLU + 2×2 max-pool blocks, then three linear layers.

    5×5 kernels for inputs of 28 and more (LeNet-5's shape), 3×3 with padding for small ones.
    """
    if size >= 28:
        pad = 2 if size == 28 else 0
        blocks = [nn.Conv2d(in_channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)]  # fmt: skip
        widths = (120, 84)
    else:
        blocks = [nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]  # fmt: skip
        widths = (64,)
    features = Sequential(*blocks, nn.Flatten())
    flat = features.output_shape((in_channels, size, size))[0]
    head: list[nn.Module] = []
    for width in widths:
        head += [nn.Linear(flat, width), nn.ReLU()]
        flat = width
    return Sequential(*blocks, nn.Flatten(), *head, nn.Linear(flat, classes))


def layer_table(model: Sequential, input_shape: tuple[int, ...]) -> str:
    """One line a layer (type, configuration, output shape, parameters, MACs), then totals."""
    rows, shape = [], input_shape
    params = macs = 0
    for i, layer in enumerate(model):
        layer_macs = layer.macs(shape)
        shape = layer.output_shape(shape)
        count = layer.params().params
        params, macs = params + count, macs + layer_macs
        rows.append((str(i), type(layer).__name__, layer.spec.describe(),
                     "×".join(map(str, shape)), f"{count:,}", f"{layer_macs:,}"))  # fmt: skip
    head = ("#", "layer", "configuration", "output", "params", "MACs")
    lines = columns([head, *rows], left=4)
    lines.append(f"input {'×'.join(map(str, input_shape))}; {params:,} parameters; "
                 f"{macs:,} MACs per image")  # fmt: skip
    return "\n".join(lines)


# -- checkpoints ----------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Writes through a temporary file in the same folder, then renames it over ``path``:
    a crash mid-write leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, model: Sequential, optimizer: Optimizer, meta: dict) -> None:
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps({"format": CHECKPOINT_FORMAT, **meta}))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(meta, model state, optimizer state), never unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except FileNotFoundError as error:
        raise CheckpointError(f"no checkpoint at {path}") from error
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise CheckpointError(f"{path} is not a readable .npz checkpoint ({error})") from error
    try:
        meta = json.loads(str(arrays.pop("meta")))
        assert meta.get("format") == CHECKPOINT_FORMAT
    except (KeyError, ValueError, AssertionError) as error:
        raise CheckpointError(f"{path} is an .npz file but not a convscope checkpoint") from error
    model = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
    return meta, model, optim


def model_from_meta(meta: dict) -> Sequential:
    c, h, _ = meta["image_shape"]
    return lenet(c, h, meta["classes"])


# -- training -------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.005
    seed: int = 0
    optimizer: str = "adam"
    data: str | None = None
    out: Path = Path("runs/digits")
    resume: Path | None = None
    limit: int | None = None  # use only the first N training images (tests)


@dataclass
class Result:
    test_accuracy: float
    epochs: int
    seconds: float
    images_per_second: float
    history: list[dict] = field(default_factory=list)
    checkpoint: str = ""
    metrics: str = ""


def accuracy(model: Sequential, images: np.ndarray, labels: np.ndarray) -> float:
    """The share of images classified correctly, in eval mode; the model is left training."""
    correct = int((predict_classes(model, images) == labels).sum())
    model.train()
    return correct / len(images)


class Progress:
    """One line an epoch: redrawn in place on a terminal, printed once when done elsewhere."""

    def __init__(self, stream: Any, epoch: int, epochs: int, steps: int) -> None:
        self.stream, self.epoch, self.epochs, self.steps = stream, epoch, epochs, steps
        self.live = hasattr(stream, "isatty") and stream.isatty()

    def show(
        self, step: int, loss: float, acc: float, rate: float, final: bool = False, extra: str = ""
    ) -> None:
        if self.stream is None or not (self.live or final):
            return
        filled = int(20 * step / self.steps)
        bar = "#" * filled + "." * (20 - filled)
        line = (f"epoch {self.epoch}/{self.epochs} [{bar}] loss {loss:.4f} "
                f"acc {100 * acc:5.1f}% {rate:,.0f} img/s{extra}")  # fmt: skip
        self.stream.write(("\r" if self.live else "") + line + ("\n" if final else ""))
        self.stream.flush()


def train(
    config: TrainConfig, log: Any = sys.stderr, echo: Callable[[str], None] = print
) -> Result:
    """Trains, evaluates on the held-out split, and writes the checkpoint and metrics."""
    manual_seed(config.seed)
    dataset = datasets.load(config.data)
    x_train, y_train = dataset.train_images, dataset.train_labels
    if config.limit:
        x_train, y_train = x_train[: config.limit], y_train[: config.limit]
    c, h, w = dataset.image_shape
    meta = {"image_shape": [c, h, w], "classes": dataset.classes, "data": dataset.name,
            "seed": config.seed, "epoch": 0, "scale": dataset.scale}  # fmt: skip
    model = lenet(c, h, dataset.classes)
    optimizer: Optimizer = (
        Adam(model.parameters(), lr=config.lr)
        if config.optimizer == "adam"
        else SGD(model.parameters(), lr=config.lr, momentum=0.9)
    )
    history: list[dict] = []
    if config.resume is not None:
        saved, model_state, optim_state = load_checkpoint(config.resume)
        if saved["image_shape"] != meta["image_shape"] or saved["classes"] != meta["classes"]:
            raise CheckpointError(
                f"{config.resume} was trained on {saved['data']} images {saved['image_shape']} "
                f"with {saved['classes']} classes, not {dataset.name} {meta['image_shape']}"
            )
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        meta["epoch"] = saved["epoch"]
        history = saved.get("history", [])
    echo(layer_table(model, (c, h, w)))

    checkpoint = config.out / "checkpoint.npz"
    metrics = config.out / "metrics.json"
    rng = np.random.default_rng(config.seed + meta["epoch"])
    started, seen = time.perf_counter(), 0
    steps = math.ceil(len(x_train) / config.batch_size)
    for epoch in range(meta["epoch"] + 1, config.epochs + 1):
        # cosine annealing from lr to 0 over the run
        optimizer.lr = config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))
        order = rng.permutation(len(x_train))
        progress = Progress(log, epoch, config.epochs, steps)
        loss_sum, correct, count = 0.0, 0, 0
        epoch_start = time.perf_counter()
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x, y = x_train[idx], y_train[idx]
            logits = model(x)
            loss = softmax_cross_entropy(logits, y)
            if not math.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss} at epoch {epoch}, step {step + 1}; stopped. "
                    f"The last good checkpoint ({checkpoint}) is intact; try a smaller --lr"
                )
            optimizer.zero_grad()
            model.backward(softmax_cross_entropy_backward(logits, y))
            optimizer.step()
            loss_sum += loss * len(idx)
            correct += int((logits.argmax(axis=1) == y).sum())
            count += len(idx)
            rate = count / max(time.perf_counter() - epoch_start, 1e-9)
            progress.show(step + 1, loss_sum / count, correct / count, rate)
        seen += count
        rate = count / max(time.perf_counter() - epoch_start, 1e-9)
        test_acc = accuracy(model, dataset.test_images, dataset.test_labels)
        progress.show(steps, loss_sum / count, correct / count, rate, final=True,
                      extra=f"  test {100 * test_acc:5.1f}%")  # fmt: skip
        history.append({"epoch": epoch, "loss": loss_sum / count, "train_accuracy": correct / count,
                        "test_accuracy": test_acc})  # fmt: skip
        meta.update(epoch=epoch, history=history)
        save_checkpoint(checkpoint, model, optimizer, meta)
    seconds = time.perf_counter() - started
    # the last epoch run here already measured the final model; with none run, measure it now
    if seen:
        final = history[-1]["test_accuracy"]
    else:
        final = accuracy(model, dataset.test_images, dataset.test_labels)
    result = Result(final, meta["epoch"], seconds, seen / max(seconds, 1e-9), history,
                    str(checkpoint), str(metrics))  # fmt: skip
    payload = json.dumps(asdict(result), indent=2)
    atomic_write(metrics, lambda f: f.write(payload), binary=False)
    return result


def predict(checkpoint: Path, images_path: str) -> np.ndarray:
    """Class predictions for the images in a file, with a trained checkpoint."""
    meta, state, _ = load_checkpoint(checkpoint)
    model = model_from_meta(meta)
    model.load_state_dict(state)
    images = datasets.load_images(images_path, meta["scale"])
    if tuple(images.shape[1:]) != tuple(meta["image_shape"]):
        raise CheckpointError(
            f"the checkpoint expects images {tuple(meta['image_shape'])}, got {images.shape[1:]}"
        )
    return predict_classes(model, images)


def predict_classes(model: Sequential, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """The arg-max class of each image, in eval mode."""
    model.eval()
    out = [model(images[s : s + batch]).argmax(axis=1) for s in range(0, len(images), batch)]
    return np.concatenate(out)
