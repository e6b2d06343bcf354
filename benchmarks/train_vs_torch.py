"""The main job's epoch time: convscope's NumPy engine against PyTorch on the same run.

Run: python3 benchmarks/train_vs_torch.py [--epochs 5] [--batch-size 32]

The same LeNet-style model (convscope's, exported with ``convscope.export.to_torch`` so both
start from the same weights), the same built-in digits, batches, Adam and learning rate,
float32, the same thread count. An epoch here is the training loop only (forward, loss,
backward, update); evaluation, checkpoints and curves are left out of both. Best epoch of
``--epochs``, after one warm-up epoch, and the median of the epochs' ratios. Report
``uptime``'s load with the figures.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from convscope import data as datasets
from convscope.export import to_torch
from convscope.ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from convscope.optim import Adam
from convscope.random import manual_seed
from convscope.train import lenet


def numpy_epoch(model, optimizer, images, labels, order, batch) -> float:
    start = time.perf_counter()
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        x, y = images[idx], labels[idx]
        logits = model(x)
        softmax_cross_entropy(logits, y)
        optimizer.zero_grad()
        model.backward(softmax_cross_entropy_backward(logits, y))
        optimizer.step()
    return time.perf_counter() - start


def torch_epoch(model, optimizer, images, labels, order, batch) -> float:
    start = time.perf_counter()
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        x, y = torch.from_numpy(images[idx]), torch.from_numpy(labels[idx].astype(np.int64))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.005)
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    digits = datasets.load(None)
    images, labels = digits.train_images, digits.train_labels
    c, h, _ = digits.image_shape
    manual_seed(0)
    ours = lenet(c, h, digits.classes)
    theirs = to_torch(ours)
    our_opt = Adam(ours.parameters(), lr=args.lr)
    their_opt = torch.optim.Adam(theirs.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(images)) for _ in range(args.epochs + 1)]
    times: dict[str, list[float]] = {"convscope": [], "torch": []}
    for order in orders:  # interleaved, so a load change hits both alike
        times["convscope"].append(
            numpy_epoch(ours, our_opt, images, labels, order, args.batch_size)
        )
        times["torch"].append(
            torch_epoch(theirs, their_opt, images, labels, order, args.batch_size)
        )
        time.sleep(0.3)  # torch's OpenMP threads spin a while after its calls: let them stop
    best = {name: min(t[1:]) for name, t in times.items()}  # the first epoch is the warm-up
    ratios = [ours / their for ours, their in zip(times["convscope"][1:], times["torch"][1:])]
    print(f"digits: {len(images)} images {c}x{h}x{h}, batch {args.batch_size}, Adam, float32, "
          f"{threads} threads, best of {args.epochs} epochs after a warm-up")  # fmt: skip
    for name, seconds in best.items():
        print(f"  {name:10s} {1000 * seconds:8.1f} ms/epoch  {len(images) / seconds:9,.0f} img/s")
    print(
        f"  ratio convscope/torch: best {best['convscope'] / best['torch']:.2f}x, "
        f"median of the epochs' ratios {float(np.median(ratios)):.2f}x"
    )


if __name__ == "__main__":
    main()
