"""The review's Table 1 — ResNet50's limitations — measured on the baseline (notebook 16).

Each row of Table 1 becomes a measurement on the same data, budget and seeds as every stage:

* poor on low-resolution images: accuracy against input size (this stage's ``res_*`` variants
  and the baseline at the profile's size);
* overfitting with little data: the train − validation gap against the share of training images
  (``data_*`` variants, the dropout stage's 10% control, the baseline at 100%);
* training time and compute grow with depth; complexity; memory: training time, MACs, parameters
  and peak training memory of ResNet18–152 (the ``wide_deep`` stage, read, not retrained);
* loss of detail: accuracy on blurred and down-then-up-sampled test images (the robustness
  evaluation every model gets);
* speed: CPU latency and throughput against batch size, and training memory against batch size
  (:func:`batch_sweep`, no training).

:func:`table1` writes the table back with a measured column. :class:`LimitationsParams` is the
``limitations`` section of params.yaml.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from pydantic import Field, field_validator
from torch import nn

from ..config import (
    StageParams,
    register_stage_schema,
)
from ..experiment import Stage
from ..profiling import example_inputs, measure_latency, peak_training_memory_mb


# --------------------------------------------------------------------------- params
@register_stage_schema("limitations")
class LimitationsParams(StageParams):
    """The review's Table 1 measured (notebook 16): ``variants`` train the baseline at other
    input sizes (``res_*``) and shares of the data (``data_*``); the depth series and the
    low-data control are read from other stages."""

    depth_from: str = Field("wide_deep", description="the stage whose ResNets of several depths are read")
    low_data_from: list[str] = Field(default_factory=lambda: ["dropout/low_data_drop_rate_0"],
                                     description="stage/variant runs of the baseline on a share of the data")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32, 128], min_length=1)
    memory_batch_sizes: list[int] = Field(default_factory=lambda: [16, 64, 256])

    @field_validator("batch_sizes", "memory_batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if any(s <= 0 for s in sizes):
            raise ValueError(f"batch sizes must be positive, got {sizes}")
        return sizes

    @field_validator("low_data_from")
    @classmethod
    def _stage_slash_variant(cls, refs: list[str]) -> list[str]:
        bad = [r for r in refs if r.count("/") != 1 or not all(r.split("/"))]
        if bad:
            raise ValueError(f"must be 'stage/variant', got {bad}")
        return refs


# --------------------------------------------------------------------------- running
# rows of the review's Table 1: (source, limitation as printed, what measures it here)
TABLE1 = [
    ("H Jabnouni et al.", "Poor classification performance for low-resolution images", "resolution"),
    ("M Tripathi et al.", "For tasks with less data, overfitting is prone to occur", "data"),
    ("K He et al.", "As the depth increases, the training time and computational cost increase significantly", "depth"),
    ("K Whitehead et al.", "Although it reduces the training error, it increases the model complexity", "complexity"),
    ("K He et al.", "Complex structures perform poorly on some tasks", "deeper_not_better"),
    ("ZHOU Tao et al.", "Large calculation and memory consumption", "memory"),
    ("FEI Wenqian et al.", "It is easy to lose information in detail detection", "detail"),
    ("LI Qing et al.", "There are problems with feature extraction and speed", "speed"),
]
# what a reader should know about a row's citation, shown beside the row by the report
SOURCE_NOTES = {
    "complexity": "the review cites Whitehead, Meek & Fabrizi 2018 (Scientific Reports 8: 17516), a study of "
                  "cortical oscillations in infants, not of ResNet50: the row has no source on ResNets",
}


def depth_of(model: str) -> int | None:
    """The layer count in a ResNet's name (``resnet101`` -> 101, ``wide_resnet50_2`` -> 50)."""
    match = re.search(r"resnet(\d+)", model)
    return int(match.group(1)) if match else None


def batch_sweep(model: nn.Module, input_shapes: list[tuple[int, ...]], batch_sizes: Sequence[int],
                repeats: int = 10, memory_batch_sizes: Sequence[int] = ()) -> pd.DataFrame:
    """CPU latency (median ms), ms per image and images/s of eval-mode inference at each batch
    size, and the peak training memory of one step at each of ``memory_batch_sizes``."""
    cpu = model.cpu().eval()
    rows = {}
    for b in batch_sizes:
        ms = measure_latency(cpu, example_inputs(input_shapes, b), repeats)
        rows[b] = {"latency_ms": ms, "ms_per_image": ms / b, "images_per_s": 1000 * b / ms}
    for b in memory_batch_sizes:
        peak, _ = peak_training_memory_mb(cpu, input_shapes, b)
        rows.setdefault(b, {})["peak_train_memory_mb"] = peak
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame.index.name = "batch_size"
    return frame


def _row(table: pd.DataFrame, label: str) -> pd.Series | None:
    hit = table[table["label"] == label]
    return None if hit.empty else hit.iloc[0]


def _acc(row: pd.Series | None, metric: str = "test_acc") -> str:
    if row is None or pd.isna(row.get(f"{metric}_mean", math.nan)):
        return "n/a"
    lo, hi = row.get(f"{metric}_ci_low", math.nan), row.get(f"{metric}_ci_high", math.nan)
    return f"{row[f'{metric}_mean']:.3f}" + ("" if pd.isna(lo) else f" ± {(hi - lo) / 2:.3f}")


def _memory(at_profile_batch: float, batches: pd.DataFrame) -> str:
    by_batch = batches["peak_train_memory_mb"].dropna() if "peak_train_memory_mb" in batches else pd.Series()
    if pd.isna(at_profile_batch) and by_batch.empty:
        return "training memory not measured under this profile"
    parts = [] if pd.isna(at_profile_batch) else [f"{at_profile_batch:.0f} MB at the profile's batch"]
    parts += [f"{m:.0f} MB at batch {b}" for b, m in by_batch.items()]
    return "peak training memory " + "; ".join(parts)


def table1(resolution: pd.DataFrame, data: pd.DataFrame, depth: pd.DataFrame, batches: pd.DataFrame,
           corruptions: dict[str, float], clean_acc: float) -> pd.DataFrame:
    """The review's Table 1 with a column of what this profile measured for each row, indexed by
    the row's key in :data:`TABLE1`."""
    by_size = resolution.sort_values("img_size")
    small, full = by_size.iloc[0], by_size.iloc[-1]
    by_share = data.sort_values("train_fraction")
    few, all_ = by_share.iloc[0], by_share.iloc[-1]
    deep = depth.dropna(subset=["depth"]).sort_values("depth")
    shallow, deepest = deep.iloc[0], deep.iloc[-1]
    r50 = deep[deep["depth"] == 50].iloc[0] if (deep["depth"] == 50).any() else shallow
    detail = {k: v for k, v in corruptions.items() if k.split("@")[0] in ("gaussian_blur", "low_resolution")}
    measured = {
        "resolution": f"test accuracy {_acc(small)} at {small.img_size:.0f} px vs {_acc(full)} at "
                      f"{full.img_size:.0f} px",
        "data": f"train − validation gap {_acc(few, 'train_val_gap')} with {few.train_fraction:.0%} of the images vs "
                f"{_acc(all_, 'train_val_gap')} with {all_.train_fraction:.0%}",
        "depth": f"{deepest.label}: x{deepest.train_time_s_mean / r50.train_time_s_mean:.2f} training time, "
                 f"x{deepest.gmacs / r50.gmacs:.2f} MACs of ResNet50's; {shallow.label}: "
                 f"x{shallow.train_time_s_mean / r50.train_time_s_mean:.2f}, x{shallow.gmacs / r50.gmacs:.2f}",
        "complexity": f"training accuracy {_acc(shallow, 'train_acc')} ({shallow.params_m:.1f} M parameters) vs "
                      f"{_acc(deepest, 'train_acc')} ({deepest.params_m:.1f} M)",
        "deeper_not_better": f"test accuracy {_acc(shallow)} ({shallow.label}) vs {_acc(r50)} (ResNet50) vs "
                             f"{_acc(deepest)} ({deepest.label})",
        "memory": f"ResNet50 {r50.gmacs:.2f} GMACs per image, {r50.params_m:.1f} M parameters, "
                  + _memory(r50.get("peak_train_memory_mb", math.nan), batches),
        "detail": (", ".join(f"{k} {v:.3f}" for k, v in detail.items()) + f" vs clean {clean_acc:.3f}")
                  if detail else "no corrupted test sets under this profile",
        "speed": f"CPU latency {batches['latency_ms'].iloc[0]:.1f} ms at batch {batches.index[0]}, "
                 f"{batches['images_per_s'].max():.0f} images/s at best (batch {batches['images_per_s'].idxmax()})",
    }
    table = pd.DataFrame([{"source": src, "limitation (Table 1)": text, "measured here": measured[key]}
                          for src, text, key in TABLE1], index=pd.Index([key for _, _, key in TABLE1], name="row"))
    return table


@dataclass
class Limitations:
    """What notebook 16 shows: the runs, one table per row family of Table 1, and Table 1."""

    results: dict
    resolution: pd.DataFrame
    data: pd.DataFrame
    depth: pd.DataFrame
    batches: pd.DataFrame
    table: pd.DataFrame


def run_limitations(stage: Stage) -> Limitations:
    """Train this stage's resolution and data-share variants over the seeds, read the baseline,
    the low-data control and the depth series from their stages, time inference and training
    memory against batch size, and fill in Table 1."""
    cfg, b = stage.config, stage.budget
    results = stage.run_variants()
    depth_stage = [(cfg.depth_from, name) for name in stage.params.stage(cfg.depth_from).variants]
    low_data = [tuple(ref.split("/")) for ref in cfg.low_data_from]
    frame = stage.frame(("baseline", "resnet50"), *low_data, *depth_stage)
    frame["img_size"] = frame["img_size"].fillna(b.img_size) if "img_size" in frame else b.img_size
    frame["train_fraction"] = frame["train_fraction"].fillna(1.0) if "train_fraction" in frame else 1.0
    models = frame["model"].fillna(frame["variant"]) if "model" in frame else frame["variant"]
    frame["depth"] = [depth_of(m) for m in models]
    base = frame["label"] == "baseline/resnet50"
    own = frame["stage"] == stage.name
    resolution = frame[base | (own & frame["variant"].str.startswith("res_"))].sort_values("img_size")
    data = frame[base | frame["label"].isin([f"{s}/{v}" for s, v in low_data])
                 | (own & frame["variant"].str.startswith("data_"))].sort_values("train_fraction")
    depth = frame[base | (frame["stage"] == cfg.depth_from)].sort_values(["depth", "params_m"])
    batches = batch_sweep(stage.model_factory()(), stage.input_shapes(), cfg.batch_sizes, b.latency_repeats,
                          cfg.memory_batch_sizes if b.measure_memory else ())
    baseline = frame[base].iloc[0]
    corruptions = {c.removeprefix("corruptions_"): baseline[c] for c in frame if c.startswith("corruptions_")
                   and not pd.isna(baseline[c])}
    table = table1(resolution, data, depth, batches, corruptions, float(baseline["test_acc_mean"]))
    return Limitations(results, resolution, data, depth, batches, table)
