"""The one reader of stage results: every ``<stages_dir>/<stage>/metrics.json`` as one row per
(stage, variant), in the flattened form the stages' plots, the report and the synergy stage use.

Stages are discovered, not listed: any ``metrics.json`` whose top-level entries hold a
``test_acc`` block (as :class:`~resnet_review.experiment.Stage` writes them) becomes one row per
variant, so a new technique appears in the report without edits here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

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


LATENCY_COLUMNS = ("latency_cpu_b1_ms", "latency_cpu_b32_ms")


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
               "latency_same_run_cpu_b32_ms": "CPU latency, batch 32 (ms, side by side)"}


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
