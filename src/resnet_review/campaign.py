"""The gpu campaign: every notebook stage of ``dvc.yaml`` in short, resumable chunks, core claims
first, and the planner that says what the whole pipeline costs before anything trains.

    python -m resnet_review.campaign --plan              # GPU time per stage, nothing trained
    python -m resnet_review.campaign --max-minutes 8     # one chunk; run it again to continue

It runs the same notebooks through the same :mod:`resnet_review.pipeline` command as ``dvc
repro`` (so ``dvc exp run -S profile=gpu`` on a host with DVC gives the same numbers), writing to
``reports/gpu/stages/<stage>/`` and ``models/gpu/``. A chunk hands each stage the time left
(``$RESNET_REVIEW_DEADLINE``): no epoch starts that would end after it, every finished epoch is in
its run's resume checkpoint, and a finished run (a stage, variant and seed) is never trained
again. ``reports/gpu/campaign.json`` records each stage's state (done with the params it ran
under, partial, failed) and ``reports/gpu/campaign.md`` shows what is complete and what is
missing; the report stage renders from whatever is complete after every chunk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .config import Budget, Params, ParamsError, Paths, PlannedRun, load_params
from .experiment import DEADLINE_ENV
from .pipeline import EXIT_AT_DEADLINE
from .storage import atomic_write_text

REPORTS, MODELS = "reports/gpu", "models/gpu"
# the review's core claims first: the architecture changes, the novel models (HFF reads dropout's
# low-data control), distillation, compression, Table 1; then the training techniques
PRIORITY = ("data_overview", "baseline", "se", "resnext", "fpn", "swish", "dropout", "wide_deep", "hff", "mmff",
            "teacher", "distillation", "pruning", "quantisation", "limitations", "augmentation", "transfer",
            "hparam_tuning", "synergy")


# --------------------------------------------------------------------------- the stages
@dataclass(frozen=True)
class StageSpec:
    """A notebook stage of dvc.yaml: its params section, its notebook and the stages it reads."""

    name: str
    notebook: str
    needs: frozenset[str] = frozenset()
    weights_from: frozenset[str] = frozenset()  # the stages whose trained weights (models/<stage>) it loads


def pipeline_stages(root: Path) -> list[StageSpec]:
    """Every papermill stage of ``dvc.yaml`` in file order, ``foreach`` expanded as DVC does, with
    the stages whose metrics or models it depends on."""
    specs = []
    for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values():
        items = stage["foreach"].items() if "foreach" in stage else [(None, None)]
        body = stage["do"] if "foreach" in stage else stage
        for key, item in items:
            def expand(text: str, key=key, item=item) -> str:
                return text.replace("${key}", str(key)).replace("${item}", str(item)) if key is not None else text

            argv = shlex.split(expand(body.get("cmd", "")))
            if argv[:3] != ["python", "-m", "resnet_review.pipeline"] or "--stage" not in argv:
                continue
            needs, weights = set(), set()
            for dep in body.get("deps", []):
                parts = Path(expand(dep)).parts
                if parts[:2] == ("reports", "stages") and len(parts) > 2:
                    needs.add(parts[2])
                elif parts[:1] == ("models",) and len(parts) > 1:
                    needs.add(parts[1])
                    weights.add(parts[1])
            name = argv[argv.index("--stage") + 1]
            specs.append(StageSpec(name, argv[3], frozenset(needs - {name}), frozenset(weights - {name})))
    return specs


def campaign_order(stages: list[StageSpec]) -> list[StageSpec]:
    """``stages`` with each one after those it reads, otherwise in :data:`PRIORITY` order (stages
    it does not name keep their file order after it); the report last."""
    rank = {name: i for i, name in enumerate(PRIORITY)}
    pending = sorted((s for s in stages if s.name != "report"),
                     key=lambda s: (rank.get(s.name, len(rank)), stages.index(s)))
    known, ordered = {s.name for s in stages}, []
    while pending:
        placed = {s.name for s in ordered}
        ready = next((s for s in pending if (s.needs & known) <= placed), None)
        if ready is None:
            raise ValueError(f"dvc.yaml's stages {[s.name for s in pending]} depend on each other in a cycle")
        ordered.append(ready)
        pending.remove(ready)
    return ordered + [s for s in stages if s.name == "report"]


def stage_fingerprint(raw_params: dict, stage: StageSpec, root: Path) -> str:
    """What a stage's results depend on: the profile's budget, the shared recipe, its own params
    section and its notebook. A stage done under another fingerprint runs again."""
    profile = raw_params["profile"]
    blob = json.dumps({"budget": raw_params["profiles"][profile], "train": raw_params.get("train"),
                       "section": raw_params.get(stage.name), "profile": profile,
                       "notebook": hashlib.sha256((root / stage.notebook).read_bytes()).hexdigest()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the planner
@dataclass
class Throughput:
    """Aggregate training images/s of ResNet50 on the planning device, and where the figure is from."""

    images_per_s: float
    img_size: int
    source: str


def measured_throughput(root: Path) -> Throughput:
    """The best measured figure: ``reports/gpu/benchmarks/throughput.json`` (benchmarks/
    gpu_throughput.py on a GPU), else the gpu baseline stage's own training speed."""
    bench = root / REPORTS / "benchmarks" / "throughput.json"
    if bench.is_file():
        data = json.loads(bench.read_text())
        if data.get("device_type") == "cuda" and data.get("engine_images_per_s"):
            return Throughput(data["engine_images_per_s"], data["img_size"],
                              f"{bench.relative_to(root)}: {data.get('device_name', 'GPU')}, {data.get('setting', '')}")
    # this campaign's baseline, else the latest archived gpu run's (reports/gpu/<run>/stages/...)
    candidates = [root / REPORTS / "stages" / "baseline" / "metrics.json",
                  *sorted((root / REPORTS).glob("*/stages/baseline/metrics.json"), reverse=True)]
    for metrics in (p for p in candidates if p.is_file()):
        data = json.loads(metrics.read_text())
        block, budget = data.get("resnet50", {}), data.get("budget", {})
        rate = (block.get("train_images_per_s") or {}).get("mean")
        if rate:
            return Throughput(rate, budget.get("img_size", 64),
                              f"last measured: {metrics.relative_to(root)} (one eager process, batch "
                              f"{budget.get('batch_size')}, {budget.get('img_size')} px; not yet measured with the "
                              "group engine on a GPU)")
    raise FileNotFoundError(f"no measured GPU throughput: neither {bench} nor a gpu baseline's metrics.json "
                            f"under {root / REPORTS}; pass --images-per-s")


@dataclass
class StagePlan:
    stage: str
    runs: list[PlannedRun]
    train_units: float  # ResNet50 training images at the reference size
    eval_units: float
    architectures: int
    seconds: float = 0.0


@dataclass
class Plan:
    profile: str
    throughput: Throughput
    stages: list[StagePlan] = field(default_factory=list)
    compile_s: float = 0.0
    stage_start_s: float = 0.0

    @property
    def minutes(self) -> float:
        return sum(s.seconds for s in self.stages) / 60


def _macs_ratio(run_model: str, kwargs: dict, img_size: int, view: str, ref_img: int,
                cache: dict, in_chans: int = 1) -> float:
    """Forward MACs of a model at ``img_size`` over ResNet50's at ``ref_img`` (1 channel, 10 classes)."""
    key = (run_model, json.dumps(kwargs, sort_keys=True, default=str), img_size, view)
    if key not in cache:
        import torch

        from .data import VIEWS
        from .models import build_model
        from .profiling import count_flops

        def macs(name: str, kw: dict, size: int, v: str) -> float:
            x = torch.zeros(1, in_chans, size, size)
            inputs = VIEWS[v](x)
            model = build_model(name, num_classes=10, in_chans=inputs[0].shape[1], **kw).eval()
            with torch.no_grad():
                return float(count_flops(model, inputs))

        if "ref" not in cache:
            cache["ref"] = macs("resnet50", {}, ref_img, "image")
        cache[key] = macs(run_model, kwargs, img_size, view) / cache["ref"]
    return cache[key]


def plan_pipeline(params: Params, stages: list[StageSpec], throughput: Throughput, *, compile_s: float = 60.0,
                  stage_start_s: float = 20.0, kinds: int = 5) -> Plan:
    """The GPU time of every stage under ``params``' profile: training images and evaluation
    passes of every planned run, each weighted by its model's MACs relative to ResNet50 at the
    throughput's input size (a forward pass costs a third of a training step), divided by the
    measured aggregate throughput; plus ``compile_s`` per architecture a compiling stage builds
    and ``stage_start_s`` per stage (kernel start, data, profiling). Scaling by MACs assumes the
    GPU is compute-bound, which large batches make nearly true; a measured rate per model replaces
    the assumption."""
    b: Budget = params.budget
    plan = Plan(params.profile, throughput, compile_s=compile_s, stage_start_s=stage_start_s)
    cache: dict = {}
    teacher_of: dict[str, PlannedRun] = {}
    for spec in stages:
        runs = params.stage(spec.name).training_runs(b, params.profile)
        teacher_of.setdefault(spec.name, runs[0] if runs else None)
        train = evaluation = 0.0
        for run in runs:
            ratio = _macs_ratio(run.model, run.model_kwargs, run.img_size, run.view, throughput.img_size, cache,
                                b.in_chans)
            per_image = ratio
            teacher = teacher_of.get(run.teacher_from) if run.teacher_from else None
            if teacher is not None:
                per_image += _macs_ratio(teacher.model, teacher.model_kwargs, run.img_size, "image",
                                         throughput.img_size, cache, b.in_chans) / 3
            train += run.seeds * run.epochs * run.images * per_image
            validations = max(1, min(run.epochs, run.epochs * run.images // max(b.val_every_images, 1)))
            scored = (b.test_size + min(b.val_size, run.images)
                      + b.corruption_size * kinds * len(b.corruption_severities))
            evaluation += run.seeds * (scored + validations * b.val_size) * ratio / 3
        architectures = len({(r.model, json.dumps(r.model_kwargs, sort_keys=True, default=str)) for r in runs})
        seconds = (train + evaluation) / throughput.images_per_s + (compile_s * architectures if b.compile else 0)
        plan.stages.append(StagePlan(spec.name, runs, train, evaluation, architectures,
                                     seconds + (stage_start_s if spec.name != "report" else 5.0)))
    return plan


def plan_markdown(plan: Plan, budget: Budget) -> str:
    t = plan.throughput
    lines = [f"Plan of the `{plan.profile}` profile: {budget.train_size} training images at {budget.img_size} px, "
             f"{budget.epochs} epochs, {len(budget.seeds)} seeds, batch {budget.batch_size}"
             f" ({budget.concurrent_seeds} seeds side by side), at **{t.images_per_s:,.0f}** ResNet50 training "
             f"images/s at {t.img_size} px ({t.source}); {plan.compile_s:.0f} s of compilation per architecture "
             f"and {plan.stage_start_s:.0f} s per stage assumed.",
             "", "| stage | runs (variant x seeds) | training images (ResNet50-equivalent, M) | "
             "evaluation images (M) | minutes |", "|---|---|---|---|---|"]
    for s in plan.stages:
        runs = sum(r.seeds for r in s.runs)
        lines.append(f"| {s.stage} | {runs} | {s.train_units / 1e6:.1f} | {s.eval_units / 1e6:.1f} | "
                     f"{s.seconds / 60:.1f} |")
    lines.append(f"| **all** | {sum(sum(r.seeds for r in s.runs) for s in plan.stages)} | "
                 f"{sum(s.train_units for s in plan.stages) / 1e6:.1f} | "
                 f"{sum(s.eval_units for s in plan.stages) / 1e6:.1f} | **{plan.minutes:.1f}** |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the chunks
class CampaignState:
    """``campaign.json``: each stage's status, the fingerprint it ran under, and its chunks' times."""

    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, dict] = json.loads(path.read_text())["stages"] if path.is_file() else {}

    def done(self, name: str, fingerprint: str) -> bool:
        entry = self.stages.get(name, {})
        return entry.get("status") == "done" and entry.get("fingerprint") == fingerprint

    def record(self, name: str, status: str, fingerprint: str, seconds: float) -> None:
        entry = self.stages.setdefault(name, {"chunks_s": []})
        if entry.get("fingerprint") != fingerprint:
            entry["chunks_s"] = []
        entry.update(status=status, fingerprint=fingerprint,
                     updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        entry["chunks_s"].append(round(seconds, 1))
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"stages": self.stages}, indent=2) + "\n")


Runner = Callable[[StageSpec, float], str]  # (stage, deadline) -> "done" | "partial" | "failed"


def pipeline_runner(root: Path, profile: str = "gpu", *, reports: str | Path = REPORTS, models: str | Path = MODELS,
                    grace_s: float = 120.0) -> Runner:
    """Runs a stage's notebook through ``python -m resnet_review.pipeline`` with the chunk's
    deadline, writing under ``reports`` and ``models``; a stage still running ``grace_s`` after
    the deadline (evaluating, say) is stopped, its finished epochs kept in the resume checkpoints."""

    def run(stage: StageSpec, deadline: float) -> str:
        args = (["--reports-dir", str(reports), "-p", "stages_dir", f"{reports}/stages"] if stage.name == "report"
                else ["--reports-dir", f"{reports}/stages", "--models-dir", str(models)])
        env = {**os.environ, DEADLINE_ENV: f"{deadline:.3f}"}
        try:
            done = subprocess.run([sys.executable, "-m", "resnet_review.pipeline", stage.notebook, "--stage",
                                   stage.name, "--profile", profile, *args], cwd=root, env=env,
                                  timeout=max(deadline - time.time(), 0) + grace_s)
        except subprocess.TimeoutExpired:
            return "partial"
        return {0: "done", EXIT_AT_DEADLINE: "partial"}.get(done.returncode, "failed")

    return run


def run_chunk(stages: list[StageSpec], fingerprints: dict[str, str], state: CampaignState, *, max_minutes: float,
              runner: Runner, jobs: int = 1, report: bool = True, models_dir: Path | None = None,
              before_report: Callable[[], None] | None = None) -> dict[str, str]:
    """Run the stages not yet done, in order, ``jobs`` at a time, until ``max_minutes`` are up: a
    stage starts once the stages it reads are done; the report, when chosen, renders last from
    whatever is complete, after ``before_report`` (e.g. writing what is missing). A stage done on
    another machine whose weights a pending stage loads, but which are not under ``models_dir``
    here, is trained again (weights are not committed).
    Returns each stage's status after this chunk."""
    deadline = time.time() + max_minutes * 60
    training = [s for s in stages if s.name != "report"]
    status = {s.name: ("done" if state.done(s.name, fingerprints[s.name]) else "pending") for s in training}
    if models_dir is not None:
        for stage in training:
            for source in sorted(stage.weights_from) if status[stage.name] == "pending" else ():
                if status.get(source) == "done" and not any((models_dir / source).glob("*/seed*.pt")):
                    print(f"[campaign] {source}: done, but its weights are not under {models_dir / source} and "
                          f"{stage.name} loads them: training it again", file=sys.stderr)
                    status[source] = "pending"
    running: dict[Future, StageSpec] = {}
    starts: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        while True:
            ready = [s for s in training if status[s.name] == "pending"
                     and all(status.get(n, "done") == "done" for n in s.needs)]
            while ready and len(running) < max(jobs, 1) and time.time() < deadline:
                stage = ready.pop(0)
                status[stage.name], starts[stage.name] = "running", time.time()
                print(f"[campaign] {stage.name}: starting ({(deadline - time.time()) / 60:.1f} min left in the chunk)",
                      file=sys.stderr)
                running[pool.submit(runner, stage, deadline)] = stage
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as err:  # noqa: BLE001 - a broken runner fails its stage, not the chunk
                    print(f"[campaign] {stage.name}: {err}", file=sys.stderr)
                    outcome = "failed"
                status[stage.name] = outcome
                state.record(stage.name, outcome, fingerprints[stage.name], time.time() - starts[stage.name])
                print(f"[campaign] {stage.name}: {outcome} after {time.time() - starts[stage.name]:.0f} s",
                      file=sys.stderr)
    if before_report is not None:
        before_report()
    for s in stages:
        if s.name == "report" and report:
            status["report"] = runner(s, max(deadline, time.time() + 300))
    return status


def completeness(params: Params, stages: list[StageSpec], stages_dir: Path, state: CampaignState) -> str:
    """Markdown: per stage, its status and which planned variants have results for every seed."""
    seeds = len(params.budget.seeds)
    lines = ["| stage | status | variants with every seed | missing |", "|---|---|---|---|"]
    for spec in stages:
        if spec.name == "report":
            continue
        planned = [r.variant for r in params.stage(spec.name).training_runs(params.budget, params.profile)]
        path = stages_dir / spec.name / "metrics.json"
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        have = [k for k, v in metrics.items() if isinstance(v, dict) and v.get("seeds") == seeds]
        missing = [v for v in planned if v not in have and v not in ("trials", "source_pretrain")]
        status = state.stages.get(spec.name, {}).get("status", "pending")
        lines.append(f"| {spec.name} | {status} | {len(have)} | {', '.join(missing) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet_review.campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", action="store_true", help="print the pipeline's GPU time per stage; train nothing")
    parser.add_argument("--max-minutes", type=float, default=8.0, help="stop starting epochs after this long")
    parser.add_argument("--stages", nargs="*", help="only these stages (and the report), default all")
    parser.add_argument("--jobs", type=int, default=1, help="stages side by side on the device")
    parser.add_argument("--profile", default="gpu", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--images-per-s", type=float, help="plan at this aggregate ResNet50 rate instead of the "
                        "measured one (at --plan-img-size px)")
    parser.add_argument("--plan-img-size", type=int, default=64)
    parser.add_argument("--compile-s", type=float, default=60.0, help="assumed compilation time per architecture")
    parser.add_argument("--no-report", action="store_true", help="do not render the report after the chunk")
    args = parser.parse_args(argv)
    if args.max_minutes <= 0 or args.jobs < 1:
        parser.error(f"--max-minutes must be > 0 and --jobs >= 1, got {args.max_minutes} and {args.jobs}")
    paths = Paths()
    try:
        params = load_params(paths.params, profile=args.profile)
    except ParamsError as err:
        parser.exit(2, f"error: {err}\n")
    stages = campaign_order(pipeline_stages(paths.root))
    unknown = sorted(set(args.stages or []) - {s.name for s in stages})
    if unknown:
        parser.error(f"unknown stages {unknown}; dvc.yaml has {[s.name for s in stages]}")
    if args.stages:
        stages = [s for s in stages if s.name in args.stages or s.name == "report"]
    out = paths.root / REPORTS
    if args.plan:
        throughput = (Throughput(args.images_per_s, args.plan_img_size, "given with --images-per-s")
                      if args.images_per_s else measured_throughput(paths.root))
        plan = plan_pipeline(params, stages, throughput, compile_s=args.compile_s)
        text = plan_markdown(plan, params.budget)
        print(text)
        if not args.images_per_s and args.profile == "gpu":
            out.mkdir(parents=True, exist_ok=True)
            (out / "plan.md").write_text(text)
        return 0
    raw = yaml.safe_load(paths.params.read_text())
    raw["profile"] = args.profile
    fingerprints = {s.name: stage_fingerprint(raw, s, paths.root) for s in stages}
    state = CampaignState(out / "campaign.json")

    def write_progress() -> None:  # before the report renders: its index shows this table
        atomic_write_text(out / "campaign.md", "# gpu campaign: what is complete\n\n"
                          + completeness(params, stages, out / "stages", state))

    status = run_chunk(stages, fingerprints, state, max_minutes=args.max_minutes,
                       runner=pipeline_runner(paths.root, args.profile), jobs=args.jobs, report=not args.no_report,
                       models_dir=paths.root / MODELS, before_report=write_progress)
    left = [n for n, s in status.items() if s != "done" and n != "report"]
    print(f"[campaign] {'complete' if not left else 'to do: ' + ', '.join(left)}", file=sys.stderr)
    return 0 if not left else EXIT_AT_DEADLINE if all(status[n] in ("partial", "pending") for n in left) else 1


if __name__ == "__main__":
    sys.exit(main())
