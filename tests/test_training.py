"""The main job and its pieces: model, optimizers, data loaders, checkpoints, resume."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest
import torch

from convscope import nn
from convscope.cli import main
from convscope.data import DataError, load, load_images, read_idx
from convscope.module import CheckpointError, Parameter, constant_init
from convscope.optim import SGD, Adam
from convscope.train import TrainConfig, TrainingError, atomic_write, lenet, load_checkpoint, train


def test_lenet_shapes_for_every_input_kind():
    assert lenet(1, 8, 10).output_shape((1, 8, 8)) == (10,)
    assert lenet(1, 28, 10).output_shape((1, 28, 28)) == (10,)
    assert lenet(3, 32, 10).output_shape((3, 32, 32)) == (10,)
    model = lenet(1, 28, 10)
    assert model[0].spec.kernel_size == (5, 5) and model[-1].spec.in_features == 84


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_steps_match_torch(kind):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(3)]
    ours = Parameter((3, 4), constant_init(0.0), dtype=np.float64)
    ours.data = w0
    theirs = torch.nn.Parameter(torch.tensor(w0))
    if kind == "sgd":
        opt = SGD([ours], lr=0.1, momentum=0.9, weight_decay=0.01)
        topt = torch.optim.SGD([theirs], lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        opt = Adam([ours], lr=0.1, weight_decay=0.01)
        topt = torch.optim.Adam([theirs], lr=0.1, weight_decay=0.01)
    for g in grads:
        ours.grad = g.copy()
        theirs.grad = torch.tensor(g)
        opt.step()
        topt.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_atomic_write_keeps_the_old_file_on_a_crash(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write(target, lambda f: f.write("old"), binary=False)

    def crash(f):
        f.write("half of the new")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash, binary=False)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_idx_and_cifar_loaders_read_files_written_in_those_formats(tmp_path):
    rng = np.random.default_rng(1)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(mnist / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(mnist / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    data = load(str(mnist))
    assert data.train_images.shape == (12, 1, 28, 28) and data.test_labels.shape == (5,)
    assert data.train_images.dtype == np.float32 and 0 <= data.train_images.min() <= 1

    cifar = tmp_path / "cifar"
    cifar.mkdir()
    for name, n in (("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 3)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}  # fmt: skip
        (cifar / name).write_bytes(pickle.dumps(batch))
    data = load(str(cifar))
    assert data.train_images.shape == (10, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "data_batch_1").write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(DataError, match="refusing"):
        load(str(evil))
    (mnist / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(DataError, match="header says"):
        read_idx(mnist / "t10k-labels-idx1-ubyte")


def test_training_learns_digits_and_checkpoints(tmp_path):
    # Reduced budget: 3 epochs on the built-in digits must already classify most test images.
    out = tmp_path / "run"
    result = train(TrainConfig(epochs=3, seed=1, out=out), echo=lambda s: None, log=None)
    assert result.test_accuracy >= 0.90
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["test_accuracy"] == result.test_accuracy
    meta, state, optim = load_checkpoint(out / "checkpoint.npz")
    assert meta["epoch"] == 3 and "0.weight" in state and optim

    # resume to 4 epochs continues from epoch 3
    resumed = train(TrainConfig(epochs=4, seed=1, out=out, resume=out / "checkpoint.npz"),
                    echo=lambda s: None, log=None)  # fmt: skip
    assert resumed.epochs == 4 and [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]


def test_same_seed_same_run(tmp_path):
    runs = [train(TrainConfig(epochs=1, seed=7, limit=256, out=tmp_path / str(i)),
                  echo=lambda s: None, log=None) for i in range(2)]  # fmt: skip
    assert runs[0].history == runs[1].history


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, seed=0, limit=128, out=out), echo=lambda s: None, log=None)
    before = (out / "checkpoint.npz").read_bytes()
    import convscope.train as training

    monkeypatch.setattr(training, "softmax_cross_entropy", lambda logits, y: float("nan"))
    with pytest.raises(TrainingError, match="nan"):
        train(TrainConfig(epochs=2, seed=0, limit=128, out=out, resume=out / "checkpoint.npz"),
              echo=lambda s: None, log=None)  # fmt: skip
    assert (out / "checkpoint.npz").read_bytes() == before


def test_bad_checkpoints_get_clear_errors(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, seed=0, limit=64, out=out), echo=lambda s: None, log=None)
    good = (out / "checkpoint.npz").read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a convscope checkpoint"):
        load_checkpoint(foreign)
    _, state, _ = load_checkpoint(out / "checkpoint.npz")
    other = lenet(1, 8, 5)
    with pytest.raises(CheckpointError, match="shape"):
        other.load_state_dict(state)
    with pytest.raises(CheckpointError, match="missing"):
        nn.Conv2d(1, 2, 3).load_state_dict({})


def test_cli_train_json_and_predict(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--limit", "128", "--out", str(out), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"test_accuracy", "epochs", "seconds"} <= set(result) and result["epochs"] == 1
    images = tmp_path / "images.npy"
    np.save(images, (np.arange(3 * 64).reshape(3, 8, 8) % 17).astype(np.uint8))
    assert main(["predict", str(out / "checkpoint.npz"), str(images), "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert len(predictions) == 3 and all(0 <= p < 10 for p in predictions)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 5, 5), np.float32))
    assert main(["predict", str(out / "checkpoint.npz"), str(wrong)]) == 2
    assert "expects images" in capsys.readouterr().err
    assert load_images(str(images)).shape == (3, 1, 8, 8)
