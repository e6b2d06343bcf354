"""The main job: train a small LeNet-style CNN, with checkpoints and metrics written atomically."""

from __future__ import annotations

import json
import math
import os
import re
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

META_MAX_BYTES = 16 << 20  # the meta JSON (history grows by ~100 bytes an epoch)
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}$")


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Writes through a temporary file in the same folder, then renames it over ``path``:
    a crash mid-write leaves the old file intact. The file gets the mode a plain ``open``
    would give it (0o666 less the umask), not mkstemp's 0o600; the temporary file's name
    carries the writer's pid, so ``remove_stale_temporaries`` can tell a dead writer's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid <= 2**22  # someone else's process, or a pid no system has
    return True


def remove_stale_temporaries(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Deletes the temporary files a killed run left behind for ``names`` in ``folder``
    (``.checkpoint.npz.<pid>.XXXXXXXX`` whose writer is gone); returns what it removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP.match(entry.name)
        stale = match is not None and match["name"] in names and entry.is_file()
        if stale and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def nonfinite_state(model: Sequential, optimizer: Optimizer) -> str | None:
    """The name of the first parameter or optimizer state holding NaN or inf, or None."""
    for name, value in model.state_dict().items():
        if not np.isfinite(value).all():
            return f"model/{name}"
    for name, value in optimizer.state_dict().items():
        if not np.isfinite(value).all():
            return f"optim/{name}"
    return None


def save_checkpoint(path: Path, model: Sequential, optimizer: Optimizer, meta: dict) -> None:
    """Writes the model, the optimizer state and ``meta`` atomically; never a NaN or inf."""
    bad = nonfinite_state(model, optimizer)
    if bad is not None:
        raise TrainingError(f"refusing to save {path}: {bad} holds NaN or infinite values")
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps({"format": CHECKPOINT_FORMAT, **meta}))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_meta(meta: Any, path: Path) -> dict:
    """Refuses meta that is not a convscope checkpoint's, or that lacks a key or has a key of
    the wrong type or range (explicit checks: ``python -O`` removes asserts)."""
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is an .npz file but not a convscope checkpoint")

    def bad(key: str, rule: str) -> CheckpointError:
        return CheckpointError(f"{path}: meta {key!r} must be {rule}, got {meta.get(key)!r:.80}")

    shape = meta.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(map(_is_int, shape))):
        raise bad("image_shape", "a list of 3 integers [C, H, W]")
    try:
        datasets.check_image_shape(tuple(shape), f"{path}: meta image_shape")
    except datasets.DataError as error:
        raise CheckpointError(str(error)) from error
    if not (_is_int(meta.get("classes")) and 1 <= meta["classes"] <= datasets.MAX_CLASSES):
        raise bad("classes", f"an integer from 1 to {datasets.MAX_CLASSES}")
    if not (_is_int(meta.get("epoch")) and meta["epoch"] >= 0):
        raise bad("epoch", "an integer >= 0")
    if not (_is_int(meta.get("seed")) and meta["seed"] >= 0):
        raise bad("seed", "an integer >= 0")
    scale = meta.get("scale")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool)
            and math.isfinite(scale) and scale > 0):  # fmt: skip
        raise bad("scale", "a finite number > 0")
    if not isinstance(meta.get("data"), str):
        raise bad("data", "a string")
    history = meta.get("history", [])
    if not (isinstance(history, list) and all(isinstance(h, dict) for h in history)):
        raise bad("history", "a list of objects")
    return meta


_OPTIM_KEY = re.compile(r"^(steps|(?P<kind>m|v|velocity)\.(?P<index>\d+))$")


def load_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(meta, model state, optimizer state), never unpickling anything.

    Only the members a checkpoint has are read (others are ignored, never inflated); each
    one's header is checked against the model the meta describes and against the member's
    size before its data is allocated. Weights must be finite floats."""
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError as error:
        raise CheckpointError(f"no checkpoint at {path}") from error
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise CheckpointError(f"{path} is not a readable .npz checkpoint ({error})") from error
    try:
        with archive:
            return _read_checkpoint(archive, path)
    except datasets.DataError as error:
        raise CheckpointError(str(error)) from error
    except MemoryError as error:
        raise CheckpointError(f"{path}: not enough memory to load this checkpoint") from error


def _read_checkpoint(
    archive: zipfile.ZipFile, path: Path
) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    members = {info.filename: info for info in archive.infolist()}
    if "meta.npy" not in members:
        raise CheckpointError(f"{path} is an .npz file but not a convscope checkpoint")
    text = datasets.read_zip_member(archive, members["meta.npy"], str(path), "U", META_MAX_BYTES)
    if text.shape != ():
        raise CheckpointError(f"{path} is an .npz file but not a convscope checkpoint")
    try:
        meta = json.loads(str(text[()]))
    except ValueError as error:
        raise CheckpointError(f"{path}: its meta is not JSON ({error})") from error
    meta = check_meta(meta, path)
    described = model_from_meta(meta)
    shapes = {name: p.shape for name, p in described._named("")}

    def read(name: str, shape: tuple[int, ...], kinds: str) -> np.ndarray:
        array = datasets.read_zip_member(archive, members[name], str(path), kinds)
        if array.shape != shape:
            raise CheckpointError(
                f"{path}: {name} has shape {array.shape}, the model needs {shape}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CheckpointError(f"{path}: {name} holds NaN or infinite values")
        return array

    model: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if f"model/{name}.npy" not in members:
            raise CheckpointError(f"{path}: the weights model/{name} are missing")
        model[name] = read(f"model/{name}.npy", shape, "f")
    extra = sorted(n for n in members if n.startswith("model/") and n[6:-4] not in shapes)
    if extra:
        raise CheckpointError(f"{path}: unexpected weights {', '.join(extra[:5])}")

    params = [p.shape for p in described.parameters()]  # what the optimizer state follows
    optim: dict[str, np.ndarray] = {}
    for member in sorted(n for n in members if n.startswith("optim/")):
        key = member[6:].removesuffix(".npy")
        match = _OPTIM_KEY.match(key)
        if (
            not member.endswith(".npy")
            or match is None
            or (match["index"] is not None and int(match["index"]) >= len(params))
        ):
            raise CheckpointError(f"{path}: unexpected optimizer state {member}")
        if key == "steps":
            optim[key] = read(member, (), "iu")
        else:
            optim[key] = read(member, params[int(match["index"])], "f")
    return meta, model, optim


def checkpoint_optimizer(optim: dict[str, np.ndarray]) -> str:
    """The optimizer a checkpoint's state belongs to: Adam keeps a step count, SGD does not."""
    return "adam" if "steps" in optim else "sgd"


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
    curves: str = ""


def accuracy(model: Sequential, images: np.ndarray, labels: np.ndarray) -> float:
    """The share of images classified correctly, in eval mode; the model is left training."""
    correct = int((predict_classes(model, images, where="the held-out images") == labels).sum())
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


def check_config(config: TrainConfig) -> None:
    """Refuses settings training cannot run with, before any data is read."""
    if not (isinstance(config.lr, (int, float)) and math.isfinite(config.lr) and config.lr > 0):
        raise TrainingError(f"--lr must be a finite number > 0, got {config.lr}")
    for name in ("epochs", "batch_size"):
        value = getattr(config, name)
        if not (isinstance(value, int) and value >= 1):
            raise TrainingError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value}")
    if not (isinstance(config.seed, int) and 0 <= config.seed < 2**63):
        raise TrainingError(f"--seed must be an integer from 0 to 2**63 - 1, got {config.seed}")
    if config.optimizer not in ("adam", "sgd"):
        raise TrainingError(f"--optimizer must be adam or sgd, got {config.optimizer!r}")
    if config.limit is not None and config.limit < 1:
        raise TrainingError(f"--limit must be >= 1, got {config.limit}")


def _good_checkpoint(good: tuple[Path, int] | None, checkpoint: Path) -> str:
    """Which checkpoint is good after a failed run, in words."""
    if good is not None:
        return f"The last good checkpoint is {good[0]} (epoch {good[1]}), intact"
    if checkpoint.exists():
        return f"No checkpoint was saved by this run; {checkpoint} is as it was before the run"
    return "No checkpoint was saved"


#: Seconds between redraws of curves.png during a run (drawing takes ~0.2 s; the last epoch's
#: picture is always drawn): a fast epoch must not spend a third of its time on the plot.
CURVES_EVERY_S = 5.0


def write_curves(path: Path, history: list[dict]) -> None:
    """Draws the loss and accuracies per epoch to ``path`` (a PNG), atomically."""
    from .draw.curves import curves_figure  # matplotlib loads with the first picture

    picture = curves_figure(history, "png")
    atomic_write(path, lambda f: f.write(picture))


@dataclass
class Run:
    """What both engines share of a run: its data, convscope's model and optimiser (resumed and
    checked where a checkpoint is given), its history, and the files it writes with the message
    it stops with. ``optim_state`` is the resumed optimiser state as read ({} for a new run)."""

    config: TrainConfig
    dataset: Any
    x_train: np.ndarray
    y_train: np.ndarray
    meta: dict[str, Any]
    model: Sequential
    optimizer: Optimizer
    optim_state: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    good: tuple[Path, int] | None = None  # the checkpoint known to be good, and its epoch
    started: float = 0.0
    seen: int = 0  # images trained on in this run
    drawn: float = -math.inf  # when curves.png was last drawn

    @property
    def checkpoint(self) -> Path:
        return self.config.out / "checkpoint.npz"

    @property
    def metrics(self) -> Path:
        return self.config.out / "metrics.json"

    @property
    def curves(self) -> Path:
        return self.config.out / "curves.png"

    def begin(self, writes: bool = True) -> None:
        """Starts the clock; the process that writes the files first removes a killed run's
        temporary files."""
        if writes:
            files = (self.checkpoint.name, self.metrics.name, self.curves.name)
            remove_stale_temporaries(self.config.out, files)
        self.started = time.perf_counter()

    def lr(self, epoch: int) -> float:
        """The learning rate of ``epoch``: cosine annealing from --lr to 0 over the run."""
        config = self.config
        return config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))

    def stop(self, what: str) -> TrainingError:
        """The error that stops the run, naming the checkpoint that is good."""
        return TrainingError(f"{what}; stopped. {_good_checkpoint(self.good, self.checkpoint)}; "
                             "try a smaller --lr")  # fmt: skip

    def result(self) -> Result:
        seconds = time.perf_counter() - self.started
        final = self.history[-1]["test_accuracy"] if self.history else float("nan")
        return Result(final, self.meta["epoch"], seconds, self.seen / max(seconds, 1e-9),
                      self.history, str(self.checkpoint), str(self.metrics),
                      str(self.curves))  # fmt: skip

    def write_metrics(self, outcome: Result, extra: dict[str, Any] | None = None) -> None:
        payload = json.dumps({**asdict(outcome), **(extra or {})}, indent=2)
        atomic_write(self.metrics, lambda f: f.write(payload), binary=False)

    def end_epoch(
        self,
        epoch: int,
        sums: tuple[float, float, float],
        test_accuracy: float,
        optimizer: Optimizer,
        writes: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Records an epoch (loss sum, correct and image count; the held-out accuracy) and, in
        the process that writes, saves the checkpoint of ``self.model`` and ``optimizer``, the
        metrics, and the curves every few seconds and after the last epoch."""
        loss_sum, correct, count = sums
        self.seen += int(count)
        self.history.append({"epoch": epoch, "loss": loss_sum / count,
                             "train_accuracy": correct / count,
                             "test_accuracy": test_accuracy})  # fmt: skip
        self.meta.update(epoch=epoch, history=self.history)
        if not writes:
            return
        save_checkpoint(self.checkpoint, self.model, optimizer, self.meta)
        self.good = (self.checkpoint, epoch)
        self.write_metrics(self.result(), extra)
        if epoch == self.config.epochs or time.perf_counter() - self.drawn >= CURVES_EVERY_S:
            write_curves(self.curves, self.history)
            self.drawn = time.perf_counter()

    def finish(
        self,
        test_accuracy: Callable[[], float],
        writes: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> Result:
        """The run's outcome, written to metrics.json; a resumed run that trained no epoch here
        is measured now (and its curves drawn)."""
        outcome = self.result()
        if not self.seen:
            outcome.test_accuracy = test_accuracy()
            if writes and self.history:
                write_curves(self.curves, self.history)
        if writes:
            self.write_metrics(outcome, extra)
        return outcome


def start_run(config: TrainConfig) -> Run:
    """The data and convscope's model and optimiser a run starts from; with ``resume``, the
    checkpoint's weights, optimiser state and history, each checked before any training (the
    model is drawn from the global seed: seed first)."""
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
    run = Run(config, dataset, x_train, y_train, meta, model, optimizer)
    if config.resume is None:
        return run
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
    optimizer.load_state_dict(optim_state)
    meta["epoch"] = saved["epoch"]
    history = list(saved.get("history", []))
    if history:  # refused now, not after an epoch's work when curves.png is drawn from it
        from .draw.curves import curve_series

        try:
            curve_series(history)
        except ConvScopeError as error:
            raise CheckpointError(f"{config.resume}: meta {error}") from None
    run.optim_state, run.history = optim_state, history
    run.good = (config.resume, saved["epoch"])
    return run


def train(
    config: TrainConfig, log: Any = sys.stderr, echo: Callable[[str], None] = print
) -> Result:
    """Trains, evaluates on the held-out split, and writes the checkpoint and the metrics after
    every epoch, and the curves (curves.png) every few seconds and at the end. A NaN or
    infinite loss, or parameters that became non-finite, stop the run before anything
    non-finite is saved."""
    check_config(config)
    manual_seed(config.seed)
    run = start_run(config)
    model, optimizer, dataset = run.model, run.optimizer, run.dataset
    x_train, y_train = run.x_train, run.y_train
    echo(layer_table(model, tuple(dataset.image_shape)))
    run.begin()
    rng = np.random.default_rng(config.seed + run.meta["epoch"])
    steps = math.ceil(len(x_train) / config.batch_size)

    for epoch in range(run.meta["epoch"] + 1, config.epochs + 1):
        optimizer.lr = run.lr(epoch)
        order = rng.permutation(len(x_train))
        progress = Progress(log, epoch, config.epochs, steps)
        loss_sum, correct, count = 0.0, 0, 0
        epoch_start = time.perf_counter()
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x, y = x_train[idx], y_train[idx]
            # overflow is caught below (the loss, then the parameters), not warned about
            with np.errstate(over="ignore", invalid="ignore"):
                logits = model(x)
                loss = softmax_cross_entropy(logits, y)
                if not math.isfinite(loss):
                    raise run.stop(f"the loss became {loss} at epoch {epoch}, step {step + 1}")
                optimizer.zero_grad()
                model.backward(softmax_cross_entropy_backward(logits, y))
                optimizer.step()
            loss_sum += loss * len(idx)
            correct += int((logits.argmax(axis=1) == y).sum())
            count += len(idx)
            rate = count / max(time.perf_counter() - epoch_start, 1e-9)
            progress.show(step + 1, loss_sum / count, correct / count, rate)
        # the loss is checked before each update, so the epoch's last update is checked here
        bad = nonfinite_state(model, optimizer)
        if bad is not None:
            raise run.stop(f"{bad} became NaN or infinite at the end of epoch {epoch}")
        rate = count / max(time.perf_counter() - epoch_start, 1e-9)
        try:
            test_acc = accuracy(model, dataset.test_images, dataset.test_labels)
        except TrainingError as error:
            raise run.stop(str(error)) from error
        progress.show(steps, loss_sum / count, correct / count, rate, final=True,
                      extra=f"  test {100 * test_acc:5.1f}%")  # fmt: skip
        run.end_epoch(epoch, (loss_sum, correct, count), test_acc, optimizer)
    return run.finish(lambda: accuracy(model, dataset.test_images, dataset.test_labels))


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
    return predict_classes(model, images, where=images_path, hint=" (pixels far outside [0, 1]?)")


def predict_classes(
    model: Sequential,
    images: np.ndarray,
    batch: int = 512,
    where: str = "the images",
    hint: str = "",
) -> np.ndarray:
    """The arg-max class of each image, in eval mode; non-finite outputs are an error (their
    arg-max would be a meaningless class 0)."""
    model.eval()
    out = []
    for s in range(0, len(images), batch):
        with np.errstate(over="ignore", invalid="ignore"):
            logits = model(images[s : s + batch])
        finite = np.isfinite(logits).all(axis=1)
        if not finite.all():
            first = s + int(np.flatnonzero(~finite)[0])
            raise TrainingError(
                f"{where}: the model's outputs for image {first} are NaN or infinite{hint}"
            )
        out.append(logits.argmax(axis=1))
    return np.concatenate(out)
