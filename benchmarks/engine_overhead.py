"""Engine overhead: resnet_review.engine.fit against a bare PyTorch loop, in one run.

Both train the same model from the same initial weights on the same real Fashion-MNIST images
for the same number of steps (same optimiser settings and schedule). Rounds alternate bare and
engine so that machine noise hits both alike; the ratio reported is the median over rounds of
engine time / bare time (goal <= 1.05). The data-loading share is the time the bare loop spends
gathering batches from the in-memory tensors, as a fraction of its step time (goal < 5%).

    python benchmarks/engine_overhead.py [--model resnet50 --steps 30 --batch-size 128 --rounds 3]

On a GPU both loops use the engine's settings (bf16 autocast, channels-last, optionally
``torch.compile``), and ``--synthetic`` trains on random GPU-resident ImageNet-shaped batches so
that only the training step is timed, e.g. the throughput check on an H100/H200::

    python benchmarks/engine_overhead.py --synthetic --img-size 224 --in-chans 3 --num-classes 1000 \
        --batch-size 256 --steps 50 --compile --out reports/benchmarks/gpu_throughput_compiled.json

Writes reports/benchmarks/engine_overhead.json (and prints it).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from resnet_review.config import Paths, Recipe
from resnet_review.data import TensorData, load_splits
from resnet_review.engine import Accel, fit, make_optimizer, warmup_cosine
from resnet_review.models import build_model


def bare_loop(model, x, y, steps, batch_size, recipe, device, accel):
    """The reference: the fewest lines that train the same way. Returns (training seconds,
    seconds the same batch gathers take on their own)."""
    model.train()
    optimizer = make_optimizer(model, recipe)
    step_model = torch.compile(model) if accel.compile else model
    warmup = round(recipe.warmup_epochs * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup))
    order = torch.randperm(len(y), generator=torch.Generator(device=device).manual_seed(0), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        xb, yb = x[index], y[index]
        with torch.autocast(device.type, dtype=accel.amp_dtype, enabled=accel.amp_dtype is not None):
            loss = F.cross_entropy(step_model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    loss.item()
    sync()
    train_s = time.perf_counter() - start
    # the gathers timed apart: inside the loop a device sync would also wait for queued compute
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        xb, yb = x[index], y[index]
    sync()
    return train_s, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile both loops (CUDA)")
    parser.add_argument("--synthetic", action="store_true",
                        help="random images on the training device instead of Fashion-MNIST (input path not timed)")
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--out", default=None, help="JSON path (default reports/benchmarks/engine_overhead.json)")
    args = parser.parse_args(argv)
    if min(args.steps, args.batch_size, args.rounds) <= 0:
        parser.error("--steps, --batch-size and --rounds must be positive")

    paths = Paths()
    accel = Accel.for_device(args.device, compile=args.compile)
    if accel.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both loops alike: fastest kernels for fixed shapes
    n = args.steps * args.batch_size
    torch.manual_seed(0)
    if args.synthetic:
        shape = (n, args.in_chans, args.img_size, args.img_size)
        train = TensorData((torch.randn(shape, device=accel.device),),
                           torch.randint(0, args.num_classes, (n,), device=accel.device),
                           [str(c) for c in range(args.num_classes)], "synthetic")
    else:
        train = load_splits(paths.prepared, train_size=n, val_size=128, test_size=128, img_size=args.img_size,
                            in_chans=args.in_chans, device=accel.device).train
    recipe = Recipe()
    initial = build_model(args.model, num_classes=args.num_classes if args.synthetic else 10,
                          in_chans=args.in_chans).to(accel.device)
    if accel.channels_last:
        initial.to(memory_format=torch.channels_last)
    x = train.inputs[0].contiguous(memory_format=torch.channels_last) if accel.channels_last else train.inputs[0]

    # one warm-up pass of each, untimed
    bare_loop(copy.deepcopy(initial), x, train.targets, 2, args.batch_size, recipe, accel.device, accel)
    fit(copy.deepcopy(initial), train.take(torch.arange(2 * args.batch_size)), None, recipe=recipe, epochs=1,
        batch_size=args.batch_size, accel=accel, progress=False)

    rounds = []
    for r in range(args.rounds):
        bare_s, gather_s = bare_loop(copy.deepcopy(initial), x, train.targets, args.steps, args.batch_size, recipe,
                                     accel.device, accel)
        result = fit(copy.deepcopy(initial), train, None, recipe=recipe, epochs=1, batch_size=args.batch_size,
                     accel=accel, progress=False, desc="engine")
        rounds.append({"bare_s": bare_s, "engine_s": result.train_time_s, "ratio": result.train_time_s / bare_s,
                       "data_share": gather_s / bare_s})
        print(f"round {r + 1}: bare {bare_s:.2f} s, engine {result.train_time_s:.2f} s, "
              f"ratio {rounds[-1]['ratio']:.3f}, data share {rounds[-1]['data_share']:.2%}", file=sys.stderr)

    summary = {
        "model": args.model, "steps": args.steps, "batch_size": args.batch_size, "rounds": rounds,
        "input": [args.in_chans, args.img_size, args.img_size], "num_classes": train.num_classes,
        "data": "synthetic, on the device" if args.synthetic else "Fashion-MNIST, in memory",
        "amp": str(accel.amp_dtype), "channels_last": accel.channels_last, "compile": accel.compile,
        "gpu": torch.cuda.get_device_name() if accel.device.type == "cuda" else None,
        "ratio_median": statistics.median(r["ratio"] for r in rounds),
        "data_share_median": statistics.median(r["data_share"] for r in rounds),
        "images_per_s_bare": n / statistics.median(r["bare_s"] for r in rounds),
        "images_per_s_engine": n / statistics.median(r["engine_s"] for r in rounds),
        "goals": {"ratio_max": 1.05, "data_share_max": 0.05},
        "device": str(accel.device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    summary["meets_goals"] = summary["ratio_median"] <= 1.05 and summary["data_share_median"] < 0.05
    out = Path(args.out) if args.out else paths.reports / "benchmarks" / "engine_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
