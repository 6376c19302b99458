"""The one reader and writer of stage results.

:class:`StageStore` writes one stage's files as it runs — ``metrics.json`` (its dvclive summary:
intervals, per-seed values, profiles, claims), ``predictions.json``, ``headline/<variant>.json``,
the dvclive plots — and reads the metrics of the stages it builds on, refusing those of another
profile or budget. :func:`collect` reads every ``<stages_dir>/<stage>/metrics.json`` as one row
per (stage, variant), in the flattened form the stages' plots, the report and the synergy stage
use.

Stages are discovered, not listed: any ``metrics.json`` whose top-level entries hold a
``test_acc`` block (as :class:`StageStore` writes them) becomes one row per variant, so a new
technique appears in the report without edits here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from dvclive import Live
from dvclive.plots import NumpyEncoder

from .config import PREDICTIONS_FILE, Budget
from .runs import VariantResult, finite
from .storage import atomic_write_text


def _flatten(block: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in block.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name}_")
        else:
            out[name] = math.nan if value is None else value
    return out


def collect(stages_dir: str | Path, stages: list[str] | None = None) -> pd.DataFrame:
    """One row per (stage, variant) from every ``metrics.json`` found under ``stages_dir`` (or
    only those of ``stages``). A variant that records no ``train_images`` trained on the
    profile's whole training subset (``budget.train_size``)."""
    rows = []
    for path in sorted(Path(stages_dir).glob("*/metrics.json")):
        if stages is not None and path.parent.name not in stages:
            continue
        data = json.loads(path.read_text())
        budget = data.get("budget") if isinstance(data.get("budget"), dict) else {}
        for variant, block in data.items():
            if isinstance(block, dict) and isinstance(block.get("test_acc"), dict):
                rows.append({"stage": path.parent.name, "variant": variant, "label": f"{path.parent.name}/{variant}",
                             "profile": data.get("profile", "?"), "train_images": budget.get("train_size", math.nan),
                             **{f"budget_{k}": budget.get(k, math.nan) for k in ("train_size", "img_size", "epochs")},
                             **_flatten(block)})
    return pool_latency(pd.DataFrame(rows))


def on_own_budget(row: dict | pd.Series, train_size, img_size, epochs) -> bool:
    """Whether a variant (its metrics block, or a row of :func:`collect`) trained under its
    profile's own budget: every training image, the profile's input size and epochs, whole images,
    all ten classes (a key it does not record is the budget's). Such models' accuracies can be set
    side by side; a low-data, low-resolution, longer-trained or 5-class one answers another question."""
    def given(key: str):
        value = row.get(key)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    return all(given(key) in (None, expected) for key, expected in (
        ("train_images", train_size), ("img_size", img_size), ("epochs", epochs), ("view", "image"))) \
        and given("task") is None


LATENCY_COLUMNS = ("latency_cpu_b1_ms", "latency_cpu_b32_ms")
SIDE_BY_SIDE = "latency_side_by_side_cpu_b1_ms"  # the report's timing of every model in one process


def pool_latency(frame: pd.DataFrame) -> pd.DataFrame:
    """One CPU latency per architecture: each stage times its models in its own process, and the
    load of the machine at that moment moves single timings by tens of percent (the same ResNet18
    took 5.6 ms in one stage and 9.5 ms in another), so rows that share an ``architecture`` id
    (same deployed model and input, see ``Stage._profile``) get the median of their stages'
    timings. The stage's own timing stays in ``<column>_own``; rows without an id keep theirs."""
    if "architecture" not in frame:
        return frame
    frame = frame.copy()
    for column in LATENCY_COLUMNS:
        if column not in frame:
            continue
        frame[f"{column}_own"] = frame[column]
        pooled = frame.groupby("architecture")[column].transform("median")
        frame[column] = pooled.where(frame["architecture"].notna() & pooled.notna(), frame[column])
    frame["latency_timings"] = frame.groupby("architecture")["architecture"].transform("size")
    return frame


COST_LABELS = {"gmacs": "GMACs per image", "latency_cpu_b1_ms": "CPU latency, batch 1 (ms)",
               "latency_cpu_b32_ms": "CPU latency, batch 32 (ms)", "params_m": "parameters (M)",
               "peak_train_memory_mb": "peak training memory (MB)", "checkpoint_mb": "weights (MB)",
               "train_time_s_mean": "training time per seed (s)",
               "latency_same_run_cpu_b1_ms": "CPU latency, batch 1 (ms, side by side)",
               "latency_same_run_cpu_b32_ms": "CPU latency, batch 32 (ms, side by side)",
               SIDE_BY_SIDE: "CPU latency, batch 1 (ms, TorchScript, every model side by side)"}


def pareto_front(frame: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Whether each row is on the Pareto front of lower ``x`` (a cost, e.g. latency) and higher
    ``y`` (e.g. mean accuracy): True where no other row is at least as good in both and better in
    one. Equal points are kept together; a row missing either value is never on the front."""
    xs, ys = frame[x].to_numpy(dtype=float), frame[y].to_numpy(dtype=float)
    known = ~(pd.isna(xs) | pd.isna(ys))
    front = [bool(ok) and not (known & (xs <= xv) & (ys >= yv) & ((xs < xv) | (ys > yv))).any()
             for ok, xv, yv in zip(known, xs, ys)]
    return pd.Series(front, index=frame.index, name="pareto")


# --------------------------------------------------------------------------- headline metrics
# What `dvc metrics show` and `dvc exp show` print: four numbers per variant, one file per
# variant (``<stage>/headline/<variant>.json``), so the table has a row per model and a column
# per number. Everything else (intervals, per-seed runs, corruptions, claims) stays in
# metrics.json, which the report reads.
HEADLINE_DIR = "headline"
HEADLINE = {"test_acc": ("test_acc", "mean"), "test_macro_f1": ("test_macro_f1", "mean"),
            "latency_cpu_b1_ms": ("latency_cpu_b1_ms", None), "params_m": ("params_m", None)}


def headline(metrics: dict) -> dict[str, dict[str, float]]:
    """Per variant of a stage's ``metrics.json``, the numbers of :data:`HEADLINE` it holds."""
    out = {}
    for variant, block in metrics.items():
        if not (isinstance(block, dict) and isinstance(block.get("test_acc"), dict)):
            continue
        row = {}
        for name, (key, inner) in HEADLINE.items():
            value = block.get(key)
            value = value.get(inner) if inner and isinstance(value, dict) else value
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                row[name] = round(float(value), 6)
        out[variant] = row
    return out


def write_headline(stage_dir: str | Path, metrics: dict) -> Path:
    """:func:`headline` as ``<stage_dir>/headline/<variant>.json``; a file of a variant the stage
    no longer has is removed."""
    folder = Path(stage_dir) / HEADLINE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = headline(metrics)
    for stale in folder.glob("*.json"):
        if stale.stem not in rows:
            stale.unlink()
    for variant, row in rows.items():
        atomic_write_text(folder / f"{variant}.json", json.dumps(row, indent=2, sort_keys=True) + "\n")
    return folder


# --------------------------------------------------------------------------- one stage's files
BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def comparable_budget(budget: Budget) -> dict[str, Any]:
    """The budget keys that make two stages' results comparable (data, epochs, seeds, batch),
    not those that only change how they are measured or where they run."""
    return budget.model_dump(include={"train_size", "val_size", "test_size", "data_seed", "img_size", "in_chans",
                                      "epochs", "batch_size", "seeds"})


def per_seed_variants(metrics: dict[str, Any]) -> list[str]:
    """The variants a stage's metrics.json holds per-seed results of, in its order."""
    return [k for k, v in metrics.items() if isinstance(v, dict) and "per_seed" in v]


class AtomicLive(Live):
    """dvclive's ``Live`` with ``metrics.json`` written atomically: dvclive writes it in place, so a
    kill during the write left an empty file where the stage's results were."""

    def make_summary(self):
        if self._step is not None:
            self.summary["step"] = self.step
        atomic_write_text(self.metrics_file, json.dumps(self.summary, indent=4, cls=NumpyEncoder) + "\n")


class StageStore:
    """The result files of stage ``stage`` under ``out_dir``, and the metrics of its siblings
    (``out_dir.parent/<other>/metrics.json``) under the same ``profile`` and ``budget``."""

    def __init__(self, out_dir: Path, *, stage: str, profile: str, budget: Budget, version: str,
                 dvc_stage: Callable[[str], str] = str):
        self.out_dir, self.stage, self.profile, self.budget = out_dir, stage, profile, budget
        self.version = version
        self.dvc_stage = dvc_stage  # a stage's name for `dvc repro` (Paths.dvc_stage), for the errors
        self.results: dict[str, VariantResult] = {}
        self._live: Live | None = None

    @property
    def live(self) -> Live:
        """The stage's dvclive logger, opened on first use: opening it clears the stage's earlier
        metrics and plots, so a stage that fails before logging anything (bad input, missing
        data) leaves the results already written untouched."""
        if self._live is None:
            self._live = AtomicLive(str(self.out_dir), report=None, save_dvc_exp=False, dvcyaml=None)
            self._live.summary.update({"profile": self.profile, "stage": self.stage, "package_version": self.version,
                                       "budget": comparable_budget(self.budget)})
        return self._live

    # ------------------------------------------------------------------ writing
    def record(self, result: VariantResult) -> VariantResult:
        """``result`` as the block of its variant in metrics.json (replacing the last-epoch values
        dvclive's ``log_metric`` left there with the aggregates over seeds)."""
        self.results[result.name] = result
        self.live.summary[result.name] = result.summary()
        self.live.make_summary()
        return result

    def annotate(self, variant: str, **values: Any) -> None:
        """Add numbers measured after a variant ran (e.g. a speed-up against a reference measured
        in the same process) to its block of metrics.json."""
        if variant not in self.results:
            raise KeyError(f"variant '{variant}' has not been run in stage '{self.stage}'")
        self.results[variant].info.update(finite(values))
        self.record(self.results[variant])

    def log(self, **values: Any) -> None:
        """Stage-level numbers that are not per variant (e.g. split sizes, claims)."""
        self.live.summary.update(finite(values))
        self.live.make_summary()

    def log_epoch(self, variant: str, seed: int, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch of one seed's training curves (dvclive plots)."""
        self.live.step = epoch
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
            if key in metrics:
                self.live.log_metric(f"{variant}/seed{seed}/{key}", metrics[key], plot=True)

    def write(self) -> None:
        """metrics.json and predictions.json as the results stand now."""
        if self.results:
            atomic_write_text(self.out_dir / PREDICTIONS_FILE, json.dumps(self.predictions(), sort_keys=True))
        self.live.make_summary()

    def finish(self) -> dict[str, Any]:
        """Write metrics.json, predictions.json and the headline numbers (``headline/<variant>.json``,
        what ``dvc metrics show`` prints) for good; returns the metrics."""
        self.write()
        self.live.end()
        metrics = json.loads((self.out_dir / "metrics.json").read_text())
        if headline(metrics):  # a stage of models (data_overview has none)
            write_headline(self.out_dir, metrics)
        return metrics

    def predictions(self) -> dict[str, Any]:
        """Every seed's predicted class per test image, per variant, with the images' classes (one
        character per image, base 36): what a paired bootstrap over seeds and test images needs
        (:func:`resnet_review.stats.paired_seeds_and_images`)."""
        def chars(labels) -> str:
            return "".join(BASE36[int(i)] for i in labels)

        variants = {}
        for name, result in self.results.items():
            runs = [r for r in result.runs if r.test.predicted is not None]
            if runs:
                variants[name] = {"targets": chars(runs[0].test.targets),
                                  "seeds": {str(r.seed): chars(r.test.predicted) for r in runs}}
        return {"format": "per variant: the test images' classes and each seed's predicted classes, one base-36 "
                          "character per image, in the order of the test set", "variants": variants}

    # ------------------------------------------------------------------ reading the stages before
    def metrics_of(self, stage: str) -> tuple[Path, dict[str, Any]]:
        """Path and content of another stage's metrics.json beside this stage's, or a clear error."""
        path = self.out_dir.parent / stage / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `dvc repro {self.dvc_stage(stage)}` first")
        return path, json.loads(path.read_text())

    def block(self, stage: str, variant: str) -> dict[str, Any]:
        """Everything another stage's metrics.json holds for ``variant`` (per-seed results, its
        data and epochs, its profile), after checking it ran under this profile and budget."""
        path, data = self.metrics_of(stage)
        if variant not in data or "per_seed" not in data[variant]:
            raise KeyError(f"{path} has no per-seed results for variant '{variant}' (it has "
                           f"{per_seed_variants(data)}); under profile '{self.profile}' "
                           f"stage '{stage}' may not run it")
        if data.get("profile") != self.profile:
            raise ValueError(f"{path} was produced under profile '{data.get('profile')}', this stage runs "
                             f"'{self.profile}'; results of different budgets are not comparable")
        theirs, mine = data.get("budget"), comparable_budget(self.budget)
        if theirs is not None and theirs != mine:
            changed = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            raise ValueError(f"{path} was produced with another '{self.profile}' budget (differs in "
                             f"{', '.join(changed)}); re-run `dvc repro {self.dvc_stage(stage)}` so both use the "
                             "same one")
        return data[variant]
