"""Training throughput: our loop vs. a naive per-image loader loop, same model and data.

Ours: uint8 tensors in memory, one batched crop/flip per batch, channels-last on CPU.
Naive: a map-style dataset that converts and augments one image at a time in Python (as
torchvision-style transforms do) and a collate that stacks them, contiguous NCHW.
Both run the same optimizer step on the same ResNet-56 CNN. Prints images/s and the ratio.
With --amp it also times our loop under bf16 autocast (`deepsloth train --amp bf16`) and prints
its speed-up over fp32 (large on CPUs with AMX, none where bf16 is emulated).

    python benchmarks/train_throughput.py [--arch resnet56] [--steps 12] [--batch-size 128] [--amp]

Uses the imported CIFAR-10 train split when present ($DEEPSLOTH_DATA), else random images.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from deepsloth.data import TensorLoader
from deepsloth.errors import DeepslothError
from deepsloth.models import create_model


class _Images:
    def __init__(self, images, labels, name="cifar10"):
        self.images, self.labels, self.name = images, labels, name

    def __len__(self):
        return len(self.labels)


def load_images(n: int):
    try:
        from deepsloth.data import load_dataset
        ds = load_dataset("cifar10", "train")
        return ds.images[:n], ds.labels[:n], "CIFAR-10 train"
    except DeepslothError:
        g = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                torch.randint(0, 10, (n,), generator=g), "random uint8 images")


def naive_batches(images, labels, batch_size, seed=0):
    """One image at a time: to float, pad, random crop, random flip; then stack."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g).tolist()
    for start in range(0, len(order) - batch_size + 1, batch_size):
        xs, ys = [], []
        for i in order[start:start + batch_size]:
            x = images[i].float() / 255
            x = F.pad(x, (4, 4, 4, 4))
            dy, dx = torch.randint(0, 9, (2,), generator=g).tolist()
            x = x[:, dy:dy + 32, dx:dx + 32]
            if torch.rand((), generator=g) < 0.5:
                x = x.flip(-1)
            xs.append(x)
            ys.append(int(labels[i]))
        yield torch.stack(xs), torch.tensor(ys)


def timed_steps(model, batches, steps, channels_last, amp=None):
    from deepsloth.precision import autocast

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    done, t0, images = 0, None, 0
    for x, y in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        if done == 2:  # skip warm-up steps
            t0 = time.perf_counter()
        elif done > 2:
            images += len(y)
        if done == steps + 2:
            break
    return images / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--amp", action="store_true", help="also time our loop under bf16 autocast")
    args = ap.parse_args()
    n = (args.steps + 3) * args.batch_size
    images, labels, source = load_images(n)
    print(f"{args.arch} CNN, batch {args.batch_size}, {args.steps} timed steps, data: {source}, "
          f"threads: {torch.get_num_threads()}")

    naive_model = create_model(args.arch, sdn=False, seed=0)
    naive = timed_steps(naive_model, naive_batches(images, labels, args.batch_size), args.steps, False)

    ours_model = create_model(args.arch, sdn=False, seed=0).to(memory_format=torch.channels_last)
    loader = TensorLoader(_Images(images, labels), batch_size=args.batch_size, augment=True,
                          drop_last=True, channels_last=True)
    ours = timed_steps(ours_model, iter(loader), args.steps, True)

    print(f"naive per-image loop : {naive:8.1f} images/s")
    print(f"deepsloth loop       : {ours:8.1f} images/s")
    print(f"ratio (ours / naive) : {ours / naive:8.2f}x")
    if args.amp:
        bf_model = create_model(args.arch, sdn=False, seed=0).to(memory_format=torch.channels_last)
        loader.set_epoch(0)
        bf16 = timed_steps(bf_model, iter(loader), args.steps, True, amp="bf16")
        print(f"deepsloth loop, bf16 : {bf16:8.1f} images/s")
        print(f"ratio (bf16 / fp32)  : {bf16 / ours:8.2f}x")


if __name__ == "__main__":
    main()
