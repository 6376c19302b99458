"""How long the last `dvc repro` took, stage by stage, against the profile's time goal.

Reads what the pipeline already wrote, trains nothing: each rendered notebook's papermill
timestamps (its wall time, and the span from the first notebook's start to the last one's end,
which includes DVC's hashing between stages), and each stage's per-seed training seconds and
images/s from its metrics.json. The baseline's training speed is recorded beside the times: the
same machine has trained the same ResNet50 at 133 to 197 images/s on different days, and the
pipeline's time follows it.

    python benchmarks/repro_time.py [--reports reports --models models --goal-min 60
                                     --out reports/benchmarks/repro_time.json]

The span is the repro's time only when one `dvc repro` ran every stage in one go; `--note` says
so in the JSON when it did not (e.g. a repro resumed after a fix).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from datetime import datetime
from pathlib import Path


def stage_times(notebook: Path) -> dict:
    """Wall time and timestamps of one rendered notebook (papermill's metadata)."""
    meta = json.loads(notebook.read_text())["metadata"].get("papermill", {})
    if not meta.get("start_time") or not meta.get("end_time"):
        raise ValueError(f"{notebook} has no papermill start/end time: was it rendered by the pipeline?")
    return {"start": meta["start_time"], "end": meta["end_time"], "wall_s": float(meta["duration"])}


def training(metrics: Path) -> tuple[float, list[float]]:
    """Training seconds summed over every variant and seed of a stage, and the images/s of each run."""
    seconds, speeds = 0.0, []
    if not metrics.is_file():
        return seconds, speeds
    for block in json.loads(metrics.read_text()).values():
        per_seed = block.get("per_seed") if isinstance(block, dict) else None
        if not per_seed:
            continue
        seconds += sum(t for t in per_seed.get("train_time_s") or [] if t is not None and math.isfinite(t))
        speeds += [s for s in per_seed.get("train_images_per_s") or [] if s is not None and math.isfinite(s)]
    return seconds, speeds


def folder_gib(folder: Path) -> float | None:
    """Disk held by the files under ``folder`` (hard links to DVC's cache counted once), None if absent."""
    if not folder.is_dir():
        return None
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return round(total / 2**30, 1)


def summarise(reports: Path, goal_min: float, models: Path | None = None) -> dict:
    notebooks = sorted((reports / "stages").glob("*/notebook.ipynb")) + sorted(reports.glob("report/notebook.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no rendered notebooks under {reports}/stages: run `dvc repro` first")
    rows = []
    for notebook in notebooks:
        times = stage_times(notebook)
        train_s, _ = training(notebook.with_name("metrics.json"))
        rows.append({"stage": notebook.parent.name, **times, "training_s": round(train_s, 1),
                     "other_s": round(times["wall_s"] - train_s, 1)})
    rows.sort(key=lambda r: r["start"])
    start = min(datetime.fromisoformat(r["start"]) for r in rows)
    end = max(datetime.fromisoformat(r["end"]) for r in rows)
    span_s = (end - start).total_seconds()
    _, baseline_speeds = training(reports / "stages" / "baseline" / "metrics.json")
    stages_s = sum(r["wall_s"] for r in rows)
    return {
        "stages": rows,
        "stages_wall_s": round(stages_s, 1),
        "training_s": round(sum(r["training_s"] for r in rows), 1),
        "other_s": round(sum(r["other_s"] for r in rows), 1),
        "span_s": round(span_s, 1),
        "between_stages_s": round(span_s - stages_s, 1),
        "baseline_train_images_per_s": (round(statistics.median(baseline_speeds), 1) if baseline_speeds else None),
        "goal_min": goal_min,
        "meets_goal": span_s <= goal_min * 60,
        # the weights the repro keeps (each seed's, each stage's traced models): the disk it needs
        "models_gib": folder_gib(models) if models is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/repro_time.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="the pipeline's reports folder")
    parser.add_argument("--models", type=Path, default=Path("models"), help="the pipeline's weights folder")
    parser.add_argument("--goal-min", type=float, default=60.0, help="the profile's time goal, in minutes")
    parser.add_argument("--note", default="", help="recorded as is, e.g. how the repro was run")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/repro_time.json"))
    args = parser.parse_args(argv)
    if args.goal_min <= 0:
        parser.error(f"--goal-min must be positive, got {args.goal_min}")
    try:
        result = summarise(args.reports, args.goal_min, args.models)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    if args.note:
        result["note"] = args.note
    for row in result["stages"]:
        print(f"{row['stage']:16s} {row['wall_s']:7.0f} s  training {row['training_s']:6.0f} s  "
              f"other {row['other_s']:6.0f} s")
    print(f"stages {result['stages_wall_s'] / 60:.1f} min (training {result['training_s'] / 60:.1f}, other "
          f"{result['other_s'] / 60:.1f}); first start to last end {result['span_s'] / 60:.1f} min; baseline trained "
          f"at {result['baseline_train_images_per_s']} images/s; goal {args.goal_min:g} min: "
          f"{'met' if result['meets_goal'] else 'missed'}; weights kept: {result['models_gib']} GiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
