"""Training throughput (images/s) of a training step fed three ways, on the current device.

* naive: a map-style dataset that converts and augments one image at a time in Python (as
  torchvision-style transforms do) and a collate that stacks them, contiguous NCHW; the batch is
  then copied to the device.
* per-batch: the training set on the device, each batch's augmentation parameters drawn on the
  CPU and copied to the device batch by batch (on CUDA every copy waits for the GPU to catch up).
* device-resident (what `deepsloth train` runs): the training set on the device, the whole epoch's
  augmentation parameters drawn when the epoch starts and copied once; each batch is indexed and
  augmented on the device, so the host queues steps without waiting. The batches are the same as
  per-batch, so the two differ only in speed; the ratio (device-resident / per-batch) is printed.

Every variant runs the same optimizer step on the same model (ResNet-56 CNN by default),
channels-last where `deepsloth train` uses it. Each timing covers a whole pass over the data,
including the start of the epoch, after one untimed pass to warm up; the variants take turns,
`--repeats` passes each, and each one's best pass counts (other work on the machine slows single
passes). With --amp it also times the
device-resident loop under bf16 autocast (`deepsloth train --amp bf16`) and prints its speed-up
over fp32 (large on CPUs with AMX and on GPUs once launches are few, none where bf16 is
emulated); with --compile it times it with the model under torch.compile (`--compile`).

    python benchmarks/train_throughput.py [--arch resnet56] [--steps 12] [--batch-size 128] [--repeats 3]
                                          [--device auto] [--amp] [--compile] [--no-naive]

Uses the imported CIFAR-10 train split when present ($DEEPSLOTH_DATA), else random images.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from deepsloth.data import TensorLoader, augment_batch
from deepsloth.device import prefers_channels_last, resolve_device
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
        if len(ds) >= n:
            return ds.images[:n], ds.labels[:n], "CIFAR-10 train"
    except DeepslothError:
        pass
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g), "random uint8 images")


class NaiveLoader:
    """One image at a time: to float, pad, random crop, random flip; then stack and copy."""

    def __init__(self, images, labels, batch_size, device, seed=0):
        self.images, self.labels, self.batch_size, self.device, self.seed = images, labels, batch_size, device, seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.labels), generator=g).tolist()
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            xs, ys = [], []
            for i in order[start:start + self.batch_size]:
                x = self.images[i].float() / 255
                x = F.pad(x, (4, 4, 4, 4))
                dy, dx = torch.randint(0, 9, (2,), generator=g).tolist()
                x = x[:, dy:dy + 32, dx:dx + 32]
                if torch.rand((), generator=g) < 0.5:
                    x = x.flip(-1)
                xs.append(x)
                ys.append(int(self.labels[i]))
            yield torch.stack(xs).to(self.device), torch.tensor(ys).to(self.device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Variant:
    """One way of feeding a training step: its own model and optimizer, timed pass by pass."""

    def __init__(self, name, model, loader, device, channels_last, amp=None, compile=False):
        from deepsloth.precision import autocast

        self.name, self.loader, self.device, self.channels_last = name, loader, device, channels_last
        self.autocast = lambda: autocast(device, amp)   # noqa: E731
        self.model = model.to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if compile else self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.loss_sum = torch.zeros((), device=device)
        self.best = 0.0
        self.images_per_second()   # warm-up (and compilation): not counted

    def images_per_second(self) -> float:
        """One pass over the loader, from the start of its epoch to the last step's end."""
        self.model.train()
        _sync(self.device)
        t0, images = time.perf_counter(), 0
        for x, y in self.loader:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                loss = F.cross_entropy(self.net(x).float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.loss_sum += loss.detach()   # as the training loop does: no read-back per step
            images += len(y)
        _sync(self.device)
        rate = images / (time.perf_counter() - t0)
        self.best = max(self.best, rate)
        return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--steps", type=int, default=12, help="batches per timed pass")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed passes per variant, interleaved across the variants; the best one counts")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    ap.add_argument("--amp", action="store_true", help="also time the device-resident loop under bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="also time the device-resident loop under torch.compile")
    ap.add_argument("--no-naive", action="store_true", help="skip the (slow) naive per-image loop")
    args = ap.parse_args()
    device = resolve_device(args.device)
    n = args.steps * args.batch_size
    images, labels, source = load_images(n)
    model = lambda: create_model(args.arch, sdn=False, seed=0)   # noqa: E731  (a fresh model per variant)
    layout = prefers_channels_last(model(), device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.arch} CNN, batch {args.batch_size}, {args.steps} steps per pass, best of {args.repeats} passes, "
          f"data: {source}, device: {where}, channels-last: {layout}")

    data = _Images(images, labels)
    per_batch = TensorLoader(data, batch_size=args.batch_size, drop_last=True, device=device, channels_last=layout,
                             augment=lambda x, g: augment_batch(x, data.name, g))
    resident = TensorLoader(data, batch_size=args.batch_size, drop_last=True, device=device, channels_last=layout,
                            augment=True)
    variants = {}
    if not args.no_naive:
        variants["naive"] = Variant("naive per-image loop", model(),
                                    NaiveLoader(images, labels, args.batch_size, device), device, False)
    variants["per-batch"] = Variant("per-batch parameter copies", model(), per_batch, device, layout)
    variants["resident"] = Variant("device-resident (default)", model(), resident, device, layout)
    if args.amp:
        variants["bf16"] = Variant("device-resident, bf16", model(), resident, device, layout, amp="bf16")
    if args.compile:
        variants["compiled"] = Variant("device-resident, compiled", model(), resident, device, layout, compile=True)
    for _ in range(args.repeats):
        for v in variants.values():
            v.images_per_second()
    for v in variants.values():
        print(f"{v.name:28s}: {v.best:9.1f} images/s")
    best = {k: v.best for k, v in variants.items()}
    print(f"ratio (device-resident / per-batch) : {best['resident'] / best['per-batch']:6.2f}x")
    if "naive" in best:
        print(f"ratio (device-resident / naive)     : {best['resident'] / best['naive']:6.2f}x")
    if "bf16" in best:
        print(f"ratio (bf16 / fp32)                 : {best['bf16'] / best['resident']:6.2f}x")
    if "compiled" in best:
        print(f"ratio (compiled / eager)            : {best['compiled'] / best['resident']:6.2f}x")


if __name__ == "__main__":
    main()
