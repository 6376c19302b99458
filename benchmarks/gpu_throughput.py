"""Aggregate training throughput of several models side by side on one device: the engine's
``fit_group`` against a bare PyTorch loop of the same models on the same streams, in one run.

Each setting trains ``--group`` ResNet50s (one per seed, as the gpu profile's ``concurrent_seeds``)
on random batches resident on the device, bf16 autocast and channels-last on CUDA, optionally
compiled; neither loop waits for the device within a round. Rounds alternate bare and engine;
the figures are medians over rounds. Settings (goals on one H200, issue of the gpu profile):

* the gpu profile's input: ResNet50, 1 channel, 10 classes, ``--img-size`` (default the profile's)
  — the planner (``python -m resnet_review.campaign --plan``) prices the pipeline at this figure;
* ImageNet's shape: ResNet50 at 224 px, 3 channels, 1000 classes (goal >= 7,000 images/s; NVIDIA's
  Deep Learning Examples publish 2,470 images/s for one A100 with AMP, MLPerf ~7,900 per H200).

    python benchmarks/gpu_throughput.py --group 3 --batch-size 512 --compile
    python benchmarks/gpu_throughput.py --tiny            # a seconds-long check of the code on CPU

Writes reports/gpu/benchmarks/throughput.json (``--out`` to change), which the planner reads
when it was measured on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from resnet_review.config import Paths, Recipe, load_params
from resnet_review.data import TensorData
from resnet_review.engine import Accel, Run, fit_group, make_optimizer, synchronize, warmup_cosine
from resnet_review.models import build_model


def bare_group(models, x, y, steps: int, batch_size: int, recipe: Recipe, accel: Accel) -> float:
    """The fewest lines that train ``models`` the engine's way, each on its own CUDA stream;
    the seconds the ``steps`` took."""
    device, cuda = accel.device, accel.device.type == "cuda"
    step_models = [torch.compile(m) if accel.compile else m for m in models]
    optimizers = [make_optimizer(m, recipe) for m in models]
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: warmup_cosine(s, steps, 0)) for o in optimizers]
    streams = [torch.cuda.Stream(device) if cuda else None for _ in models]
    order = torch.randperm(len(y), device=device)
    for m in models:
        m.train()
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        for model, optimizer, scheduler, stream in zip(step_models, optimizers, schedulers, streams):
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                with torch.autocast(device.type, dtype=accel.amp_dtype, enabled=accel.amp_dtype is not None):
                    loss = F.cross_entropy(model(x[index]).float(), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    synchronize(device)
    return time.perf_counter() - start


def measure(name: str, *, img_size: int, in_chans: int, num_classes: int, group: int, batch_size: int, steps: int,
            rounds: int, accel: Accel, model: str = "resnet50") -> dict:
    n = steps * batch_size
    torch.manual_seed(0)
    x = torch.randn(n, in_chans, img_size, img_size, device=accel.device)
    if accel.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (n,), device=accel.device)
    data = TensorData((x,), y, tuple(str(c) for c in range(num_classes)), "synthetic")
    initial = build_model(model, num_classes=num_classes, in_chans=in_chans).to(accel.device)
    if accel.channels_last:
        initial.to(memory_format=torch.channels_last)
    recipe = Recipe(warmup_epochs=0)

    def engine(steps_: int) -> float:
        part = data.take(torch.arange(steps_ * batch_size, device=accel.device))
        runs = [Run(copy.deepcopy(initial), part, seed=k, desc=f"{name}/engine{k}") for k in range(group)]
        results = fit_group(runs, recipe=recipe, epochs=1, batch_size=batch_size, accel=accel, nan_check_every=0,
                            progress=False)
        return results[0].train_time_s

    # warm-up of both (compilation, cuDNN's autotuning), untimed
    bare_group([copy.deepcopy(initial) for _ in range(group)], x, y, min(steps, 3), batch_size, recipe, accel)
    engine(min(steps, 3))
    times = []
    for r in range(rounds):
        bare_s = bare_group([copy.deepcopy(initial) for _ in range(group)], x, y, steps, batch_size, recipe, accel)
        engine_s = engine(steps)
        times.append({"bare_s": bare_s, "engine_s": engine_s})
        print(f"[{name}] round {r + 1}: bare {group * n / bare_s:,.0f} images/s, engine "
              f"{group * n / engine_s:,.0f} images/s", file=sys.stderr)
    bare = statistics.median(t["bare_s"] for t in times)
    eng = statistics.median(t["engine_s"] for t in times)
    return {"setting": f"{model}, {in_chans} channel(s), {img_size} px, {num_classes} classes, {group} models x "
                       f"batch {batch_size}", "img_size": img_size, "group": group, "batch_size": batch_size,
            "steps": steps, "rounds": times, "bare_images_per_s": group * n / bare,
            "engine_images_per_s": group * n / eng, "engine_over_bare_time": eng / bare}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = load_params(Paths().params, profile="gpu").budget
    parser.add_argument("--group", type=int, default=gpu.concurrent_seeds, help="models side by side")
    parser.add_argument("--batch-size", type=int, default=gpu.batch_size)
    parser.add_argument("--img-size", type=int, default=gpu.img_size, help="the profile setting's input size")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile both loops")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-imagenet", action="store_true", help="only the gpu profile's setting")
    parser.add_argument("--tiny", action="store_true", help="resnet18, 2 steps of batch 8 at 16/32 px: a code check")
    parser.add_argument("--out", default=None, help="JSON path (default reports/gpu/benchmarks/throughput.json)")
    args = parser.parse_args(argv)
    if min(args.group, args.batch_size, args.steps, args.rounds, args.img_size) <= 0:
        parser.error("--group, --batch-size, --steps, --rounds and --img-size must be positive")
    accel = Accel.for_device(args.device, compile=args.compile)
    if accel.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    common = dict(group=args.group, accel=accel, rounds=args.rounds)
    if args.tiny:
        common |= dict(model="resnet18", group=2, rounds=1)
        settings = {"profile": dict(img_size=16, in_chans=1, num_classes=10, batch_size=8, steps=2),
                    "imagenet": dict(img_size=32, in_chans=3, num_classes=1000, batch_size=8, steps=2)}
    else:
        settings = {"profile": dict(img_size=args.img_size, in_chans=1, num_classes=10, batch_size=args.batch_size,
                                    steps=args.steps),
                    "imagenet": dict(img_size=224, in_chans=3, num_classes=1000, batch_size=256, steps=args.steps)}
        if args.skip_imagenet:
            settings.pop("imagenet")
    results = {name: measure(name, **s, **common) for name, s in settings.items()}
    summary = {
        **results["profile"],  # the planner's figure
        "settings": results,
        "device_type": accel.device.type,
        "device_name": torch.cuda.get_device_name() if accel.device.type == "cuda" else platform.processor(),
        "amp": str(accel.amp_dtype), "channels_last": accel.channels_last, "compile": accel.compile,
        "torch": torch.__version__, "python": platform.python_version(),
        "goals_images_per_s": {"profile_64px": 50_000, "imagenet_224px": 7_000},
    }
    out = Path(args.out) if args.out else Paths().root / "reports/gpu/benchmarks/throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
