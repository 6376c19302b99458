"""Run every notebook stage under the ``gpu`` profile on a GPU host that has no DVC.

A lent GPU machine has torch and timm but not DVC, so this walks ``dvc.yaml`` itself: each stage
whose command is ``python -m resnet_review.pipeline NOTEBOOK --stage NAME`` runs in file order,
writing to ``reports/gpu/stages/<stage>/`` (weights under ``models/gpu``), and the report stage
renders ``reports/gpu/``.

With ``--budget-s`` the epochs and seeds of the gpu profile are fitted to a wall-clock budget first:
a one-seed, two-epoch probe of the baseline measures the cost of a seed and of an epoch, and the
profile is shrunk (never grown) until every model the chosen stages train fits, each counted as one
ResNet50.  A stage that fails is reported and the others still run.  The profile actually run is
written to ``reports/gpu/budget.json`` and is what the metrics are labelled with; ``params.yaml``
is restored to its original text afterwards.

    python scripts/gpu_profile.py --budget-s 500
    python scripts/gpu_profile.py --epochs 5 --seeds 3 --no-compile --stages swish fpn report \\
        --jobs 2 --stage-timeout-s 420

``--jobs`` runs stages side by side: at 64 px one eager process leaves the GPU mostly idle (on an
H200 three stages together trained at ~9,500 images/s each, one alone at ~16,000).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REPORTS, MODELS = "reports/gpu", "models/gpu"


def notebook_stages() -> list[tuple[str, str]]:
    """(params section, notebook) for every papermill stage of dvc.yaml, in file order, with the
    ``foreach`` stages expanded (``${key}``/``${item}`` substituted as DVC does)."""
    stages = []
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        expanded = ([(stage["do"]["cmd"].replace("${key}", str(key)).replace("${item}", str(item)))
                     for key, item in stage["foreach"].items()] if "foreach" in stage else [stage.get("cmd")])
        for cmd in expanded:
            argv = shlex.split(cmd) if isinstance(cmd, str) else []
            if argv[:3] == ["python", "-m", "resnet_review.pipeline"] and "--stage" in argv:
                stages.append((argv[argv.index("--stage") + 1], argv[3]))
    return stages


def run_stage(name: str, notebook: str, reports: str, timeout_s: float | None = None) -> float:
    if name == "report":  # the report renders the gpu tree, not the cpu one
        args = ["--reports-dir", REPORTS, "-p", "stages_dir", f"{REPORTS}/stages"]
    else:
        args = ["--reports-dir", reports, "--models-dir", MODELS]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "resnet_review.pipeline", notebook, "--stage", name,
                    "--profile", "gpu", *args], cwd=ROOT, check=True, timeout=timeout_s)
    return time.perf_counter() - t0


def run_stages(stages: list[tuple[str, str]], reports: str, jobs: int = 1, timeout_s: float | None = None,
               runner=run_stage) -> tuple[dict[str, float], list[str]]:
    """Run the stages, ``jobs`` at a time (in file order; the report, if chosen, alone after the
    others), each stopped after ``timeout_s``.  A stage that fails or runs out of time is listed
    and the others still run; the variants it finished stay in its metrics.json.  Side by side
    on one GPU the stages share it: their accuracies are unaffected, their timings are not
    comparable with stages run alone."""
    timings: dict[str, float] = {}
    failed: list[str] = []

    def one(name: str, notebook: str) -> None:
        try:
            timings[name] = runner(name, notebook, reports, timeout_s)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:  # later stages still run
            failed.append(name)
            print(f"[gpu] {name}: FAILED ({err})", file=sys.stderr)
            return
        print(f"[gpu] {name}: {timings[name]:.0f} s", file=sys.stderr)

    training = [s for s in stages if s[0] != "report"]
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        list(pool.map(lambda s: one(*s), training))
    for name, notebook in stages:
        if name == "report":
            one(name, notebook)
    return timings, failed


def set_gpu_profile(**changes) -> dict:
    params_path = ROOT / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["profiles"]["gpu"].update(changes)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params["profiles"]["gpu"]


def variant_count(name: str) -> int:
    """How many models a stage trains under the gpu profile (its ``variants`` without the ones
    limited to other profiles; the compression stages' targets plus their controls; else 1)."""
    section = yaml.safe_load((ROOT / "params.yaml").read_text()).get(name) or {}
    variants = section.get("variants") or {}
    variants = variants.values() if isinstance(variants, dict) else variants
    n = sum(1 for v in variants if "gpu" in ((v or {}).get("profiles") or ["gpu"]))
    return max(n, len(section.get("targets") or []) + 1 if "targets" in section else 1)


def fit_budget(budget_s: float, n_models: int) -> dict:
    """Probe one seed x two epochs of the baseline, then shrink epochs/seeds so that ``n_models``
    ResNet50-sized models fit ``budget_s``.  The steady epoch time comes from the second epoch's
    throughput; the first epoch's extra time (compilation) counts as a fixed cost per seed."""
    full = yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"]["gpu"]
    t_start = time.perf_counter()
    set_gpu_profile(epochs=2, seeds=[0])
    probe_dir = "reports/gpu-probe/stages"
    wall = run_stage("baseline", "notebooks/01_baseline_resnet50.ipynb", probe_dir)
    stage_dir = ROOT / probe_dir / "baseline"
    rates = (stage_dir / "plots/metrics/resnet50/seed0/images_per_s.tsv").read_text().split()
    epoch_s = full["train_size"] / float(rates[-1])    # second epoch: compiled, warm
    seed_fixed_s = max(wall - 2 * epoch_s, 0.0)         # kernel start, compilation, evaluation, profile
    left = budget_s - (time.perf_counter() - t_start) - 60  # 60 s for the data overview and report
    per_model = left / max(n_models, 1)
    seeds, epochs = list(full["seeds"]), full["epochs"]
    while True:
        epochs = min(full["epochs"], math.floor((per_model - seed_fixed_s) / len(seeds) / epoch_s))
        if epochs >= 10 or len(seeds) <= 3:
            break
        seeds = seeds[:-1]
    if epochs < 1:
        raise SystemExit(f"a budget of {budget_s:.0f} s fits no full epoch of {n_models} models "
                         f"(one epoch takes {epoch_s:.1f} s, a seed's fixed cost {seed_fixed_s:.0f} s)")
    chosen = set_gpu_profile(epochs=int(epochs), seeds=seeds)
    record = {"budget_s": budget_s, "models": n_models,
              "probe": {"epoch_s": epoch_s, "seed_fixed_s": seed_fixed_s, "stage_wall_s": wall},
              "full_profile": full, "profile_run": chosen}
    print(f"gpu profile fitted to {budget_s:.0f} s for {n_models} models: {epochs} epochs x "
          f"{len(seeds)} seeds (one epoch {epoch_s:.1f} s, {seed_fixed_s:.0f} s fixed per seed)",
          file=sys.stderr)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, help="fit epochs/seeds to this many seconds of wall clock")
    parser.add_argument("--stages", nargs="*", help="only these stages (default: all of dvc.yaml)")
    parser.add_argument("--epochs", type=int, help="run this many epochs instead of the profile's (no probe)")
    parser.add_argument("--seeds", type=int, help="run the profile's first this-many seeds (no probe)")
    parser.add_argument("--no-compile", action="store_true", help="eager mode: no torch.compile start-up cost")
    parser.add_argument("--jobs", type=int, default=1, help="stages run side by side on the GPU (timings then "
                        "not comparable with stages run alone; a stage must not read another of the same batch)")
    parser.add_argument("--stage-timeout-s", type=float, help="stop a stage after this many seconds; the "
                        "variants it finished are kept")
    args = parser.parse_args()
    stages = notebook_stages()
    unknown = sorted(set(args.stages or []) - {name for name, _ in stages})
    if unknown:
        parser.error(f"unknown stages {unknown}; dvc.yaml has {[name for name, _ in stages]}")
    stages = [s for s in stages if not args.stages or s[0] in args.stages]
    record = {}
    params_text = (ROOT / "params.yaml").read_text()
    try:
        fixed = {k: v for k, v in {"epochs": args.epochs, "compile": False if args.no_compile else None}.items()
                 if v is not None}
        if args.seeds:
            fixed["seeds"] = yaml.safe_load(params_text)["profiles"]["gpu"]["seeds"][:args.seeds]
        if fixed and args.budget_s:
            parser.error("--budget-s fits epochs and seeds itself; give it or --epochs/--seeds/--no-compile")
        if fixed:
            record = {"full_profile": yaml.safe_load(params_text)["profiles"]["gpu"],
                      "profile_run": set_gpu_profile(**fixed)}
        if args.budget_s:
            n_models = sum(variant_count(s[0]) for s in stages if s[0] not in ("data_overview", "report"))
            record = fit_budget(args.budget_s, n_models)
        timings, failed = run_stages(stages, f"{REPORTS}/stages", args.jobs, args.stage_timeout_s)
    finally:  # the fitted profile is recorded in budget.json, never left in the user's params.yaml
        (ROOT / "params.yaml").write_text(params_text)
    out = ROOT / REPORTS / "budget.json"
    if not record and out.is_file():  # a later run of some stages keeps the record of the earlier ones
        record = json.loads(out.read_text())
    record["stage_wall_s"] = {**record.get("stage_wall_s", {}), **timings}
    record["failed_stages"] = failed
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
