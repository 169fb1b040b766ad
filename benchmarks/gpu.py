"""Every attack family's step against the forward+backward floor, on whatever device is present,
and the wall time of the full CIFAR-10 paper grid projected from those steps.

Per model (default: the three shipped CIFAR-10 SDNs; `--random` for untrained weights of the same
architectures), at the batch, precision, memory layout and BatchNorm folding that crafting uses on
this device (`deepsloth.device.auto_batch`, `precision.default_amp`, `models.fold`):

floor : one forward of every exit plus one backward to the input, parameters frozen, at the same
        batch and precision -- what any input-gradient attack pays per step; also swept over
        batch sizes to find the batch where it costs least per image;
steps : per-sample DeepSloth l_inf, l_2 and l_1, PGD, PGD-avg, PGD-max (one step of all its chains),
        UAP's DeepFool step (one iteration, the input replicated once per candidate class),
        one class-universal DeepSloth step (a batch of the class's crafting images), and an SDN
        training step (every exit's cross-entropy, SGD with momentum). An attack is timed as whole
        calls with `--steps` and twice as many steps: the difference is its step, the rest its
        fixed work per call (random start; PGD-max scores each chain with a full forward).

It prints each step as a multiple of the floor at its batch ("x floor": 1.0 = no overhead; PGD-max
runs one chain per exit, UAP's step runs 9 copies of the input), per image against the floor at
the best batch, and the fixed work per call ("ms/call"), then projects the paper grid: every cell of `experiments.grid.ALL_CELLS` on each
model, per-sample cells over `--images` test images (10,000) with each cell's default steps,
universal and class-universal cells over their crafting schedule, one evaluation forward per cell,
and UAP on its own per model (an upper bound: 100 passes over 100 images, 10 DeepFool iterations per
visit, as the shipped UAP runs took). Ratios and projections, not a pass/fail.

    python benchmarks/gpu.py                          # the three zoo SDNs, crafting's defaults
    python benchmarks/gpu.py --quick                  # batches of 8, two repeats (a CPU smoke run)
    python benchmarks/gpu.py --models resnet56_sdn_cifar10 --batch 1024 --amp off
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

os.environ.setdefault("DEEPSLOTH_NO_PROGRESS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from deepsloth.attacks import PGD, UAP, DeepSloth  # noqa: E402
from deepsloth.attacks.base import frozen  # noqa: E402
from deepsloth.attacks.registry import resolve_spec  # noqa: E402
from deepsloth.device import (AUTO_BATCH_CAP, auto_batch, peak_bytes_per_item, prefers_channels_last,  # noqa: E402
                              resolve_device)
from deepsloth.exits.forward import as_exit_list  # noqa: E402
from deepsloth.experiments.grid import ALL_CELLS  # noqa: E402
from deepsloth.models import create_model  # noqa: E402
from deepsloth.models.fold import fold_batchnorm, for_input_gradients  # noqa: E402
from deepsloth.precision import autocast, default_amp, resolve_amp  # noqa: E402

SDNS = ("resnet56_sdn_cifar10", "vgg16bn_sdn_cifar10", "mobilenet_sdn_cifar10")
FAMILIES = ("deepsloth-linf", "deepsloth-l2", "deepsloth-l1", "pgd", "pgd-avg", "pgd-max", "deepfool",
            "class-universal", "train")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds of the fastest of `repeats` runs of `fn` after one warm-up run (other work on the
    machine only ever adds time, so the fastest run is the least disturbed one)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def rand_images(b: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)


def load(name: str, random: bool, device: torch.device):
    """(the model as trained, on `device`, in the memory format crafting uses; its name)."""
    if random:
        arch = name.split("_")[0]
        model = create_model(arch, "cifar10", sdn=True, seed=0).to(device).eval()
        label = f"{arch} SDN (untrained weights)"
    else:
        model = create_model(name, device=device)
        label = name
    if prefers_channels_last(model, device):
        model = model.to(memory_format=torch.channels_last)
    return model, label


class Bench:
    """Timings of one model on one device at one precision."""

    def __init__(self, model, device: torch.device, amp: Optional[str], repeats: int, steps: int):
        self.trained = model                               # what training steps update (a copy of it)
        self.net = for_input_gradients(model, device)      # what the attacks differentiate (folded on CUDA)
        self.device, self.amp, self.repeats, self.steps = device, amp, repeats, steps
        with torch.no_grad():
            self.exits = len(as_exit_list(self.net(rand_images(1, device))))
        self._floors: Dict[int, float] = {}

    # -- the floor ------------------------------------------------------------------------
    def floor_step(self, x: torch.Tensor) -> None:
        with frozen(self.net), torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            with autocast(self.device, self.amp):
                outs = as_exit_list(self.net(xi))
            torch.autograd.grad(sum(o.float().sum() for o in outs), xi)

    def floor(self, b: int) -> float:
        """Seconds of one floor step at batch b (measured once per batch)."""
        if b not in self._floors:
            x = rand_images(b, self.device)
            self._floors[b] = timed(lambda: self.floor_step(x), self.device, self.repeats)
        return self._floors[b]

    def best_batch(self, sizes: List[int]) -> tuple:
        """(batch, seconds per image) of the cheapest floor per image among `sizes` (stops at the
        first that runs out of memory)."""
        best = None
        for b in sizes:
            try:
                per = self.floor(b) / b
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
            if best is None or per < best[1]:
                best = (b, per)
        return best

    def probe_step(self, b: int) -> None:
        """One floor step on b fresh inputs (what `auto_batch` measures the memory of)."""
        self.floor_step(rand_images(b, self.device))

    def probe_inference(self, b: int) -> None:
        with torch.inference_mode():
            fold_batchnorm(self.trained)(rand_images(b, self.device))

    # -- the steps --------------------------------------------------------------------------
    def attack_call(self, family: str, b: int, steps: int) -> Callable[[], object]:
        """One call of `family` with `steps` steps on b inputs (PGD-max: `steps` per chain)."""
        dev, amp = self.device, self.amp
        x = rand_images(b, dev)
        y = torch.randint(0, 10, (b,), generator=torch.Generator().manual_seed(1)).to(dev)
        if family.startswith("deepsloth-"):
            atk = DeepSloth(self.net, norm=family.split("-")[1], steps=steps, amp=amp, dataset="cifar10")
            return lambda: atk(x)
        if family.startswith("pgd"):
            atk = PGD(self.net, objective={"pgd": "final", "pgd-avg": "avg", "pgd-max": "max"}[family], steps=steps,
                      amp=amp)
            return lambda: atk(x, y)
        if family == "class-universal":   # the crafting images of one class, one batch
            atk = DeepSloth(self.net, scope="class", num_classes=1, steps=steps, n_images=b, batch_size=b, amp=amp,
                            dataset="cifar10")
            zeros = torch.zeros(b, dtype=torch.long, device=dev)
            return lambda: atk(x, zeros)
        if family == "deepfool":   # one DeepFool iteration of UAP (the original algorithm visits batch 1)
            uap = UAP(self.net, max_iter_df=1, amp=amp)

            def df():
                with frozen(self.net), torch.enable_grad():
                    uap.deepfool(x, uap.predict(x))
            return df
        if family == "train":
            net = copy.deepcopy(self.trained).train()
            for p in net.parameters():
                p.requires_grad_(True)
            opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

            def train():
                with autocast(dev, amp):
                    outs = as_exit_list(net(x))
                loss = sum(F.cross_entropy(o.float(), y) for o in outs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return train
        raise ValueError(family)

    def per_step(self, family: str, b: int) -> Tuple[float, float]:
        """(seconds per step, seconds per call besides its steps) of `family` at batch b. Attacks are
        timed with `steps` and 2 x `steps` steps: the difference is the step, the rest the call's fixed
        work (random start; PGD-max scores every chain with a full forward). DeepFool's iteration and
        the training step are one call each."""
        if family in ("deepfool", "train"):
            return timed(self.attack_call(family, b, 1), self.device, self.repeats), 0.0
        s = self.steps
        t1 = timed(self.attack_call(family, b, s), self.device, self.repeats)
        t2 = timed(self.attack_call(family, b, 2 * s), self.device, self.repeats)
        step = (t2 - t1) / s
        if step <= 0 or t1 - s * step < 0:   # timing noise larger than the call's fixed work
            return t2 / (2 * s), 0.0
        return step, t1 - s * step

    def inference_per_image(self, b: int) -> float:
        """Seconds per image of the evaluation forward (every exit, BN folded, inference mode)."""
        net, x = fold_batchnorm(self.trained), rand_images(b, self.device)

        def fwd():
            with torch.inference_mode():
                net(x)
        return timed(fwd, self.device, self.repeats) / b

    def predict_seconds(self, b: int) -> float:
        """Seconds of UAP's final-exit prediction of b inputs."""
        uap, x = UAP(self.net, amp=self.amp), rand_images(b, self.device)
        return timed(lambda: uap.predict(x), self.device, self.repeats)


def grid_projection(steps: Dict[str, tuple], images: int, eval_per_image: float) -> Dict[str, float]:
    """Seconds per grid cell (UAP apart) from measured (seconds per step, fixed seconds per call, batch)
    per family."""
    out = {}
    for cell in ALL_CELLS + ("clean",):
        if cell == "clean":
            out[cell] = images * eval_per_image
            continue
        spec = resolve_spec(cell, dataset="cifar10")
        if spec.attack == "uap":
            continue
        p = spec.params
        if spec.scope == "sample":
            family = spec.attack if spec.attack.startswith("pgd") else f"deepsloth-{spec.norm}"
            sec, fixed, b = steps[family]
            craft = images / b * (fixed + p["steps"] * sec)
        else:   # universal: batches x epochs x steps on its crafting batch; class-universal: per class
            sec, fixed, b = steps["class-universal"]
            batches = math.ceil(p["n_images"] / p["batch_size"])
            scale = p["batch_size"] / b     # the step time scales with the crafting batch
            craft = (fixed + batches * p["epochs"] * p["steps"] * sec * scale) * (10 if spec.scope == "class" else 1)
        out[cell] = craft + images * eval_per_image
    return out


def uap_bound(b: Bench, eval_per_image: float, images: int) -> float:
    """UAP's crafting upper bound (every pass, every DeepFool iteration) plus its evaluation forward."""
    p = resolve_spec("uap").params
    visit = b.predict_seconds(1) + p["max_iter_df"] * b.per_step("deepfool", 1)[0]
    per_pass = p["n_images"] * visit + b.predict_seconds(p["n_images"])
    return p["max_passes"] * per_pass + images * eval_per_image


def fmt_s(sec: float) -> str:
    if sec >= 3600:
        return f"{sec / 3600:.2f} h"
    if sec >= 60:
        return f"{sec / 60:.1f} min"
    return f"{sec:.1f} s"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(SDNS), help="zoo names or model directories (default: the "
                                                                     "three CIFAR-10 SDNs)")
    ap.add_argument("--random", action="store_true", help="untrained weights of the models' architectures")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default=None, choices=("off", "bf16", "auto"),
                    help="precision (default: auto on CUDA, off elsewhere, as crafting)")
    ap.add_argument("--batch", type=int, default=None, help="per-sample batch (default: crafting's choice, "
                                                            "deepsloth.device.auto_batch; 128 on CPU)")
    ap.add_argument("--universal-batch", type=int, default=250, help="class-universal crafting batch (250)")
    ap.add_argument("--train-batch", type=int, default=128, help="training step batch (128)")
    ap.add_argument("--steps", type=int, default=3, help="attack steps per timed call (default 3)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=10_000, help="test images per per-sample cell in the projection")
    ap.add_argument("--quick", action="store_true", help="batches of 8, one step, two repeats, a batch sweep of 4-16")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = resolve_amp(args.amp or default_amp(device), device)
    if args.quick:
        args.batch = args.batch or 8
        args.universal_batch, args.train_batch, args.steps, args.repeats = 8, 8, 1, 2
    sweep = [4, 8, 16] if args.quick else [2 ** k for k in range(
        3, int(math.log2(2 * AUTO_BATCH_CAP if device.type == "cuda" else 512)) + 1)]
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"device: {device} ({where}); precision {amp or 'fp32'}; torch {torch.__version__}")
    totals, uaps = {}, {}
    for name in args.models:
        model, label = load(name, args.random, device)
        b = Bench(model, device, amp, args.repeats, args.steps)
        batch = auto_batch(device, default=128, given=args.batch,
                           per_item_bytes=lambda: peak_bytes_per_item(b.probe_step, device))
        folded = b.net is not model
        conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
        layout = "channels-last" if conv is not None and conv.weight.is_contiguous(
            memory_format=torch.channels_last) else "contiguous"
        print(f"\n{label}: {b.exits} exits; per-sample batch {batch}"
              f"{' (given)' if args.batch else ' (crafting default)'}; memory layout {layout}; "
              f"BatchNorm {'folded' if folded else 'as trained'}")
        fb = b.floor(batch)
        best_b, best_per = b.best_batch(sorted(set(sweep + [batch])))
        print(f"  floor: {fb * 1e3:.2f} ms per step at batch {batch} = {fb / batch * 1e6:.1f} us/image; cheapest "
              f"per image at batch {best_b}: {best_per * 1e6:.1f} us/image")
        df_batch = max(1, batch // 16)   # DeepFool replicates each input 9 times
        batches = {"deepfool": df_batch, "class-universal": args.universal_batch, "train": args.train_batch}
        measured = {}
        print(f"  {'step':16s} {'batch':>6s} {'ms/step':>9s} {'x floor':>8s} {'us/image':>9s} {'x best floor':>12s} "
              f"{'ms/call':>8s}")
        for fam in FAMILIES:
            fb_ = batches.get(fam, batch)
            sec, fixed = b.per_step(fam, fb_)
            measured[fam] = (sec, fixed, fb_)
            ratio, per = sec / b.floor(fb_), sec / fb_
            print(f"  {fam:16s} {fb_:6d} {sec * 1e3:9.2f} {ratio:8.2f} {per * 1e6:9.1f} {per / best_per:12.2f} "
                  f"{fixed * 1e3:8.2f}")
        eval_b = 16 if args.quick else auto_batch(device, default=500, per_item_bytes=lambda: peak_bytes_per_item(
            b.probe_inference, device))
        ev = b.inference_per_image(eval_b)
        cells = grid_projection(measured, args.images, ev)
        uaps[label] = uap_bound(b, ev, args.images)
        totals[label] = sum(cells.values())
        print(f"  projected grid on {args.images} test images (crafting + evaluation per cell, UAP apart):")
        for cell, sec in cells.items():
            print(f"    {cell:26s} {fmt_s(sec):>10s}")
        print(f"    {'total':26s} {fmt_s(totals[label]):>10s}")
        print(f"    {'uap-linf-universal':26s} {fmt_s(uaps[label]):>10s}  (upper bound: 100 passes x 100 images x "
              f"10 DeepFool iterations at batch 1)")
    if len(totals) > 1:
        print(f"\npaper grid, {len(totals)} models: {fmt_s(sum(totals.values()))} without UAP, "
              f"{fmt_s(sum(totals.values()) + sum(uaps.values()))} with UAP's bound")


if __name__ == "__main__":
    main()
