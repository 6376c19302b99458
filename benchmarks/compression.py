"""Compression speed-ups on this CPU, in one run: dense fp32 ResNet50 against its 50%-MACs
structurally pruned copy, its int8 copy and the pruned int8 copy, at several input sizes.

Speed-up ratios depend on work per call: at Fashion-MNIST's 28 px a ResNet50's feature maps are
7x7 and smaller after the stem, so fixed per-layer costs weigh more than at 64 or 224 px. The
models are timed side by side (``profiling.compare_latency``: every model in turn, ``--rounds``
rounds, median) so that machine noise hits them alike. Weights are random: speed does not depend
on them (accuracy is the pipeline's ``pruning`` and ``quantisation`` stages' business).

Goals: the 50%-MACs structured model >= 1.7x faster than dense (with free channel counts, and
with counts kept multiples of 8); int8 >= 3x faster than fp32.

    python benchmarks/compression.py [--sizes 28 64 --batch-sizes 1 32 --rounds 5 --repeats 10]

Writes reports/benchmarks/compression.json (and prints a table).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

from resnet_review.config import Paths
from resnet_review.models import build_model
from resnet_review.profiling import compare_latency, count_flops, example_inputs
from resnet_review.techniques import compression

GOALS = {"pruned_50": 1.7, "pruned_50_round8": 1.7, "int8": 3.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(Paths().root / "reports" / "benchmarks" / "compression.json"))
    args = parser.parse_args(argv)
    if min(args.sizes) < 8 or min(args.batch_sizes) < 1 or args.rounds < 1 or args.repeats < 1:
        parser.error("sizes must be >= 8 and batch sizes, rounds and repeats >= 1")

    torch.manual_seed(0)
    dense = build_model(args.model, num_classes=10, in_chans=1).eval()
    example = (torch.zeros(1, 1, 28, 28),)
    pruned = copy.deepcopy(dense)
    report = compression.prune_structured(pruned, example, 0.5)
    # the same target with channel counts kept multiples of 8, which vectorised kernels prefer
    aligned = copy.deepcopy(dense)
    aligned_report = compression.prune_structured(aligned, example, 0.5, round_to=8)
    results = []
    for size in args.sizes:
        shapes = [(1, size, size)]
        calibration = [example_inputs(shapes, 32, seed=k) for k in range(4)]
        models = {"dense": dense, "pruned_50": pruned, "pruned_50_round8": aligned,
                  "int8": compression.quantize_int8(dense, example_inputs(shapes, 1), calibration),
                  "pruned_50_int8": compression.quantize_int8(pruned, example_inputs(shapes, 1), calibration)}
        times = compare_latency(models, shapes, batch_sizes=tuple(args.batch_sizes), repeats=args.repeats,
                                rounds=args.rounds)
        macs = count_flops(dense, example_inputs(shapes, 1)) // 2
        for name, per_batch in times.items():
            for key, values in per_batch.items():
                ratios = [d / t for d, t in zip(times["dense"][key], values)]
                row = {"img_size": size, "model": name, "batch": int(key.removeprefix("cpu_b")),
                       "latency_ms": statistics.median(values), "speedup_vs_dense": statistics.median(ratios),
                       "dense_gmacs": macs / 1e9}
                if name in GOALS:
                    row |= {"goal": GOALS[name], "goal_met": row["speedup_vs_dense"] >= GOALS[name]}
                results.append(row)
                goal = (f"  goal x{GOALS[name]} {'met' if row['goal_met'] else 'NOT met'}" if name in GOALS else "")
                print(f"{size:>4} px  {name:<15} batch {row['batch']:>3}: {row['latency_ms']:8.2f} ms  "
                      f"x{row['speedup_vs_dense']:.2f}{goal}", file=sys.stderr)
    out = {"benchmark": "compression", "model": args.model, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "pruned_macs_reduction": report.macs_reduction, "pruned_params_reduction": report.params_reduction,
           "pruned_round8_macs_reduction": aligned_report.macs_reduction,
           "rounds": args.rounds, "repeats": args.repeats, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
