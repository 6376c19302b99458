"""How close the gpu profile's epochs bring ResNet50 to convergence: the baseline trained for each
of several epoch counts (each a whole schedule: warm-up, then cosine decay to its own end), its
test accuracy against the epochs, on the profile's data and recipe.

    python benchmarks/convergence.py                       # gpu profile, 5 10 15 20 30 epochs, first seed
    python benchmarks/convergence.py --profile smoke --epochs 1 2    # a code check on CPU

Writes reports/gpu/benchmarks/convergence.json and convergence.png (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from resnet_review.config import Paths, load_params  # noqa: E402
from resnet_review.experiment import Stage  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gpu", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15, 20, 30])
    parser.add_argument("--seeds", type=int, default=1, help="the profile's first this-many seeds")
    parser.add_argument("--out", default=None, help="folder (default reports/gpu/benchmarks)")
    args = parser.parse_args(argv)
    if min(args.epochs) <= 0 or args.seeds <= 0:
        parser.error("--epochs and --seeds must be positive")
    paths = Paths()
    params = load_params(paths.params, profile=args.profile)
    budget = params.budget
    if args.seeds > len(budget.seeds):
        parser.error(f"the {args.profile} profile has {len(budget.seeds)} seeds, not {args.seeds}")
    budget = budget.model_copy(update={"seeds": budget.seeds[:args.seeds], "corruption_size": 0,
                                       "measure_memory": False})
    params = params.model_copy(update={"profiles": {**params.profiles, args.profile: budget}})
    points = []
    with tempfile.TemporaryDirectory() as scratch:
        stage = Stage("baseline", params=params, reports_dir=f"{scratch}/stages", models_dir=f"{scratch}/models")
        for epochs in sorted(set(args.epochs)):
            result = stage.run(f"epochs_{epochs}", epochs=epochs, profile=False, save_weights=False)
            acc = result.estimate("test_acc")
            points.append({"epochs": epochs, "test_acc": acc.mean, "test_acc_per_seed":
                           [r.test.accuracy for r in result.runs],
                           "train_acc_last_epoch": [r.fit.final.get("train_acc") for r in result.runs],
                           "train_time_s": [r.fit.train_time_s for r in result.runs]})
            print(f"[convergence] {epochs} epochs: test accuracy {acc.mean:.4f}", file=sys.stderr)
    out = Path(args.out) if args.out else paths.root / "reports/gpu/benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    summary = {"profile": args.profile, "model": stage.config.model, "budget": budget.model_dump(),
               "device": str(stage.accel.device),
               "device_name": torch.cuda.get_device_name() if stage.accel.device.type == "cuda" else "cpu",
               "points": points}
    (out / "convergence.json").write_text(json.dumps(summary, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p["epochs"] for p in points], [p["test_acc"] for p in points], marker="o")
    ax.set(xlabel="epochs (each a whole schedule)", ylabel="test accuracy",
           title=f"{stage.config.model}, {args.profile} profile, {args.seeds} seed(s)")
    fig.savefig(out / "convergence.png", dpi=120, bbox_inches="tight")
    print(json.dumps(points, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
