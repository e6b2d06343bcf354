"""``convscope train --engine torch``: the same run as the NumPy engine, with PyTorch as the
engine, on one process or several under DistributedDataParallel; checkpoints in one format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from convscope import data as datasets
from convscope.cli import main
from convscope.export import to_torch
from convscope.train import TrainConfig, load_checkpoint, model_from_meta, train
from convscope.train_torch import train_with_torch

QUIET = {"echo": lambda text: None, "log": None}


def _classes_both_engines(checkpoint) -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits classified by the checkpoint in convscope's engine and in torch's."""
    meta, state, _ = load_checkpoint(checkpoint)
    ours = model_from_meta(meta)
    ours.load_state_dict(state)
    images = datasets.load(None).test_images
    theirs = to_torch(ours.eval())
    with torch.no_grad():
        torch_classes = theirs(torch.from_numpy(images)).argmax(1).numpy()
    return ours(images).argmax(1), torch_classes


def test_two_workers_train_identical_replicas_and_a_checkpoint_both_engines_read(tmp_path):
    """CI's distributed run: two gloo ranks on the digits. The replicas stay identical (DDP),
    the accuracy is the single engine's, and the checkpoint loads into convscope's engine,
    which predicts the classes torch predicts from it."""
    out = tmp_path / "ddp"
    argv = ["train", "--engine", "torch", "--workers", "2", "--epochs", "4", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["engine"] == "torch"
    assert metrics["replica_max_difference"] == 0.0
    assert metrics["test_accuracy"] > 0.9
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert (out / "curves.png").stat().st_size > 0
    ours, theirs = _classes_both_engines(out / "checkpoint.npz")
    assert (ours == theirs).mean() > 0.99  # float32 ties aside, the same classes
    labels = datasets.load(None).test_labels
    assert (ours == labels).mean() == pytest.approx(metrics["test_accuracy"], abs=0.01)


def test_the_torch_engine_runs_the_numpy_engines_run(tmp_path):
    """Same model, initial weights, batches, schedule and optimiser: the first epoch's loss and
    accuracy agree to float32 rounding, and the histories stay close."""
    config = dict(epochs=2, seed=3, limit=512)
    mine = train(TrainConfig(out=tmp_path / "numpy", **config), **QUIET)
    theirs = train_with_torch(TrainConfig(out=tmp_path / "torch", **config), quiet=True)
    first, other = mine.history[0], theirs.history[0]
    assert other["loss"] == pytest.approx(first["loss"], rel=1e-4)
    assert other["train_accuracy"] == pytest.approx(first["train_accuracy"], abs=2 / 512)
    assert theirs.history[-1]["loss"] == pytest.approx(mine.history[-1]["loss"], rel=1e-2)


def test_either_engine_resumes_the_others_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, seed=0, limit=256, out=out), **QUIET)
    resumed = train_with_torch(
        TrainConfig(epochs=2, seed=0, limit=256, out=out, resume=out / "checkpoint.npz"),
        quiet=True,
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    back = train(
        TrainConfig(epochs=3, seed=0, limit=256, out=out, resume=out / "checkpoint.npz"), **QUIET
    )
    assert [h["epoch"] for h in back.history] == [1, 2, 3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers need --engine torch"),
        (["--device", "cpu"], "--device need --engine torch"),
        (["--engine", "torch", "--device", "nonsense"], "is not a torch device"),
    ],
)
def test_torch_options_are_checked(tmp_path, capsys, extra, message):
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_torchrun_starts_the_ranks(tmp_path):
    """The documented launch for several machines, on one: torchrun runs ``-m convscope`` as
    two ranks from its environment; rank 0 alone reports and writes."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "torchrun"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-port", port, "-m", "convscope", "train", "--engine", "torch",
            "--epochs", "2", "--limit", "256", "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("test accuracy") == 1  # rank 0 only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["replica_max_difference"] == 0.0


def test_a_failing_rank_is_one_message(tmp_path, capsys):
    """A loss gone NaN inside the worker processes, and a damaged optimiser state found before
    they start: each is the CLI's one line and exit 2, as with one process."""
    out = tmp_path / "nan"
    argv = ["train", "--engine", "torch", "--workers", "2", "--optimizer", "sgd", "--lr", "1e30"]
    assert main([*argv, "--epochs", "2", "--limit", "256", "--out", str(out), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the loss became nan" in err and "No checkpoint" in err
    good = tmp_path / "good"
    train(TrainConfig(epochs=1, seed=0, limit=64, out=good), **QUIET)
    state = dict(np.load(good / "checkpoint.npz"))
    state.pop("optim/v.0")
    np.savez(tmp_path / "damaged.npz", **state)
    resume = ["--resume", str(tmp_path / "damaged.npz"), "--out", str(tmp_path / "r")]
    assert main(["train", "--engine", "torch", "--workers", "2", *resume]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer state v.0 is missing" in err
