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
from convscope.errors import ConvScopeError
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


# -- hostile input: training state, checkpoints, data files, images to predict -----------------

import io  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import zipfile  # noqa: E402

import convscope.train as training  # noqa: E402
from convscope.train import remove_stale_temporaries  # noqa: E402

QUIET = {"echo": lambda s: None, "log": None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch checkpoint on 64 digits, shared by the tests that damage copies of it."""
    out = tmp_path_factory.mktemp("trained")
    train(TrainConfig(epochs=1, seed=0, limit=64, out=out), **QUIET)
    return out / "checkpoint.npz"


def _rewrite(source, target, change):
    """Copies the .npz ``source`` to ``target``, ``change(arrays)`` editing its arrays."""
    with np.load(source) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    np.savez(target, **arrays)
    return target


def test_non_finite_state_is_never_saved_and_the_message_names_the_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    # one batch an epoch: the update that overflows is the epoch's last, unchecked by the loss
    huge = dict(optimizer="sgd", lr=1e39, batch_size=5000, limit=256)
    with pytest.raises(TrainingError, match="No checkpoint was saved"):
        train(TrainConfig(epochs=2, seed=0, out=out, **huge), **QUIET)
    assert not (out / "checkpoint.npz").exists()
    train(TrainConfig(epochs=1, seed=0, out=out, optimizer="sgd", limit=256), **QUIET)
    before = (out / "checkpoint.npz").read_bytes()
    resume = out / "checkpoint.npz"
    with pytest.raises(TrainingError, match=r"is .*checkpoint\.npz \(epoch 1\), intact"):
        train(TrainConfig(epochs=3, seed=0, out=out, resume=resume, **huge), **QUIET)
    assert resume.read_bytes() == before
    meta, state, _ = load_checkpoint(resume)
    assert all(np.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(lr=float("nan")), "--lr"),
        (dict(lr=0.0), "--lr"),
        (dict(lr=-1.0), "--lr"),
        (dict(lr=float("inf")), "--lr"),
        (dict(seed=-1), "--seed"),
        (dict(epochs=0), "--epochs"),
    ],
)
def test_training_settings_are_checked_first(tmp_path, change, match):
    with pytest.raises(TrainingError, match=match):
        train(TrainConfig(**{"out": tmp_path, "limit": 8, **change}), **QUIET)
    with pytest.raises(ConvScopeError):
        SGD([Parameter((1,), constant_init(0.0))], lr=float("nan"))


def test_files_get_the_umask_mode_and_stale_temporaries_go(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "metrics.json", lambda f: f.write("{}"), binary=False)
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o640
    stale = tmp_path / ".checkpoint.npz.999999999.abc_1234"  # a writer that is gone
    stale.write_bytes(b"half")
    mine = tmp_path / f".checkpoint.npz.{os.getpid()}.abc_1234"
    mine.write_bytes(b"in progress")
    other = tmp_path / ".other.npz.999999999.abc_1234"
    other.write_bytes(b"not ours")
    assert remove_stale_temporaries(tmp_path, ("checkpoint.npz",)) == [stale]
    assert mine.exists() and other.exists()
    stale.write_bytes(b"half")
    train(TrainConfig(epochs=1, limit=16, out=tmp_path), **QUIET)
    assert not stale.exists()


def test_metrics_are_written_after_every_epoch(tmp_path, monkeypatch):
    calls = []

    def fail_second(model, optimizer):
        calls.append(1)
        return "model/0.weight" if len(calls) == 3 else None  # epoch 2, before its save

    monkeypatch.setattr(training, "nonfinite_state", fail_second)
    with pytest.raises(TrainingError, match=r"checkpoint\.npz \(epoch 1\)"):
        train(TrainConfig(epochs=3, limit=32, out=tmp_path), **QUIET)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and len(metrics["history"]) == 1


def test_checkpoint_members_are_checked_before_they_are_read(trained, tmp_path):
    # an extra member is never read: here it is damaged, and loading still works
    extra = tmp_path / "extra.npz"
    extra.write_bytes(trained.read_bytes())
    with zipfile.ZipFile(extra, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.npy", b"\0" * 1_000_000)
    raw = bytearray(extra.read_bytes())
    at = raw.rindex(b"padding.npy", 0, len(raw) - 200) + 20  # inside its compressed data
    raw[at : at + 8] = b"\xff" * 8
    extra.write_bytes(bytes(raw))
    assert load_checkpoint(extra)[1].keys() == load_checkpoint(trained)[1].keys()

    # a header claiming 10**12 elements is refused from its size, not allocated
    lying = tmp_path / "lying.npz"
    lying.write_bytes(trained.read_bytes())
    with zipfile.ZipFile(trained) as src, zipfile.ZipFile(lying, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model/7.weight.npy":
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
                )
                data = header.getvalue() + b"\0" * 64
            dst.writestr(info, data)
    with pytest.raises(CheckpointError, match="claims shape"):
        load_checkpoint(lying)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.update({"model/0.weight": a["model/0.weight"].astype(np.int32)}), "dtype"),
        (lambda a: a.update({"model/0.bias": a["model/0.bias"] + 0j}), "dtype"),
        (lambda a: a.update({"model/0.bias": np.full(a["model/0.bias"].shape, np.nan)}), "NaN"),
        (lambda a: a.pop("model/0.bias"), "missing"),
        (lambda a: a.update({"model/0.bias": np.zeros(3, np.float32)}), "shape"),
        (lambda a: a.update({"optim/m.0": np.zeros(3, np.float32)}), "shape"),
        (lambda a: a.update({"optim/zzz": np.zeros(3, np.float32)}), "unexpected"),
        (lambda a: a.update({"meta": np.array("[1, 2]")}), "not a convscope"),
    ],
)
def test_damaged_checkpoints_get_clear_errors(trained, tmp_path, change, match):
    bad = _rewrite(trained, tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(bad)


@pytest.mark.parametrize(
    "key, value",
    [("image_shape", None), ("image_shape", [1, 8]), ("image_shape", [1, 8, 9]),
     ("image_shape", [1, 10**6, 10**6]), ("classes", "10"), ("classes", 0), ("epoch", -1),
     ("scale", float("nan")), ("seed", True), ("data", 3), ("history", {})],
)  # fmt: skip
def test_checkpoint_meta_is_checked_without_asserts(trained, tmp_path, key, value):
    def change(arrays):
        meta = json.loads(str(arrays["meta"]))
        if value is None:
            del meta[key]
        else:
            meta[key] = value
        arrays["meta"] = np.array(json.dumps(meta))

    with pytest.raises(CheckpointError, match=key):
        load_checkpoint(_rewrite(trained, tmp_path / "meta.npz", change))


def test_optimizer_state_must_fit(trained, tmp_path):
    missing = _rewrite(trained, tmp_path / "missing.npz", lambda a: a.pop("optim/v.3"))
    config = TrainConfig(epochs=2, limit=64, out=tmp_path / "run", resume=missing)
    with pytest.raises(CheckpointError, match="v.3 is missing"):
        train(config, **QUIET)
    config.resume = trained
    config.optimizer = "sgd"
    with pytest.raises(CheckpointError, match="--optimizer adam"):
        train(config, **QUIET)


def _idx(dims, body=b""):
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body


def _mnist(folder, train_images=None, **files):
    """An MNIST-style folder of tiny valid files, any of them replaced by raw bytes."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    valid = {
        "train-images-idx3-ubyte": _idx([6, 8, 8], rng.integers(0, 255, 384, np.uint8).tobytes()),
        "train-labels-idx1-ubyte": _idx([6], bytes([0, 1, 2, 0, 1, 2])),
        "t10k-images-idx3-ubyte": _idx([2, 8, 8], bytes(128)),
        "t10k-labels-idx1-ubyte": _idx([2], bytes([0, 1])),
    }
    valid.update(files)
    for name, data in valid.items():
        (folder / name).write_bytes(data)
    return str(folder)


def test_hostile_data_files_get_one_clear_error(tmp_path):
    assert load(_mnist(tmp_path / "ok")).train_images.shape == (6, 1, 8, 8)
    cases = {
        "gzip": ({"train-labels-idx1-ubyte": b"\x1f\x8bnot gzip at all"}, "gzip"),
        "huge": ({"train-images-idx3-ubyte": _idx([65535] * 4)}, "more than the file can hold"),
        "rank2": ({"train-images-idx3-ubyte": _idx([8, 8], bytes(64))}, "N×H×W"),
        "rank4": ({"train-images-idx3-ubyte": _idx([1, 1, 8, 8], bytes(64))}, "N×H×W"),
        "none": (
            {"train-images-idx3-ubyte": _idx([0, 8, 8]), "train-labels-idx1-ubyte": _idx([0])},
            "no images",
        ),  # fmt: skip
        "labels": ({"train-labels-idx1-ubyte": _idx([5], bytes(5))}, "6 images but 5 labels"),
        "tiny": (
            {
                "train-images-idx3-ubyte": _idx([6, 2, 2], bytes(24)),
                "t10k-images-idx3-ubyte": _idx([2, 2, 2], bytes(8)),
            },
            "4 to",
        ),  # fmt: skip
    }
    for name, (files, match) in cases.items():
        with pytest.raises(DataError, match=match):
            load(_mnist(tmp_path / name, **files))
    big = tmp_path / "big.gz"
    big.write_bytes(gzip.compress(_idx([10**4] * 3)))
    with pytest.raises(DataError, match="more than the file can hold"):
        read_idx(big)


def _cifar(folder, batch_bytes):
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(batch_bytes)
    ok = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(ok))
    return str(folder)


def test_hostile_cifar_batches_are_refused_quickly(tmp_path):
    few = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load(_cifar(tmp_path / "few", pickle.dumps(few)))
    # a memo bomb: each list holds the previous one twice, 2**40 leaves from a tiny file
    bomb = bytearray(b"\x80\x02}q\x00(C\x04dataq\x01]q\x02")
    for i in range(40):
        bomb += b"0]q%c(h%ch%ce" % (3 + i, 2 + i, 2 + i)  # pop the last, push it twice
    bomb += b"C\x06labelsq\x7f]q\x7eu."
    with pytest.raises(DataError, match="memo bomb|data must be"):
        load(_cifar(tmp_path / "bomb", bytes(bomb)))
    with pytest.raises(DataError, match="refusing"):
        load(_cifar(tmp_path / "codec", pickle.dumps({b"data": np.zeros(3)}, protocol=2)))
    huge = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10**30]}
    with pytest.raises(DataError, match="labels must be"):
        load(_cifar(tmp_path / "huge", pickle.dumps(huge)))


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((0, 8, 8), np.uint8), "no images"),
        (np.zeros((0,), np.float32), "expected images"),
        (np.array([["a"] * 8] * 8), "dtype"),
        (np.full((1, 8, 8), np.nan, np.float32), "NaN"),
        (np.full((1, 8, 8), np.inf), "NaN"),
        (np.full((1, 8, 8), 1e300), "NaN"),
        (np.zeros((1, 8, 8), bool), "dtype"),
        (np.full((1, 8, 8), 3e38, np.float32), "outputs"),
    ],
)
def test_predict_refuses_images_it_cannot_classify(trained, tmp_path, capsys, array, match):
    images = tmp_path / "images.npy"
    np.save(images, array)
    assert main(["predict", str(trained), str(images)]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and err.count("\n") == 1


def test_predict_refuses_a_lying_npy_header(trained, tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 10**6, 8, 8)}
    )
    images = tmp_path / "lying.npy"
    images.write_bytes(b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + bytes(64))
    with pytest.raises(DataError, match="claims shape"):
        load_images(str(images))
    assert math.prod((10**6, 10**6, 8, 8)) > 2**40
