"""Figures shared by the notebooks: curves over seeds, confusion matrices, cost trade-offs."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .data import TensorData
from .evaluate import EvalResult

sns.set_theme(context="notebook", style="whitegrid")

COST_LABELS = {"gmacs": "GMACs per image", "latency_cpu_b1_ms": "CPU latency, batch 1 (ms)",
               "latency_cpu_b32_ms": "CPU latency, batch 32 (ms)", "params_m": "parameters (M)",
               "peak_train_memory_mb": "peak training memory (MB)", "checkpoint_mb": "weights (MB)",
               "train_time_s_mean": "training time per seed (s)"}


def history_frame(results) -> pd.DataFrame:
    """Per-epoch history of every seed of one or more variants, long format."""
    rows = []
    for result in results if isinstance(results, Sequence) else [results]:
        for run in result.runs:
            rows += [{"variant": result.name, "seed": run.seed, **h} for h in run.fit.history]
    return pd.DataFrame(rows)


def training_curves(results, metrics: Sequence[str] = ("train_loss", "val_loss", "train_acc", "val_acc")):
    """Loss and accuracy per epoch: mean over seeds with a 95% CI band, one colour per variant."""
    frame = history_frame(results)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(frame, x="epoch", y=metric, hue="variant", errorbar=("ci", 95), marker="o", ax=ax,
                     legend=ax is axes[0][-1])
        ax.set_title(metric.replace("_", " "))
        ax.set_ylabel("")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric.endswith("loss"):
            ax.set_yscale("log")  # the first epoch's validation loss can be orders of magnitude higher
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


def confusion_matrix(result: EvalResult, normalise: bool = True, title: str = ""):
    """Rows are true classes, columns predictions; normalised rows read as per-class recall."""
    cm = result.confusion.astype(float)
    if normalise:
        cm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(cm, annot=True, fmt=".2f" if normalise else "d", cmap="Blues", cbar=False, ax=ax,
                xticklabels=result.classes, yticklabels=result.classes, annot_kws={"size": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix (accuracy {result.accuracy:.3f})")
    fig.tight_layout()
    return fig


def per_class_accuracy(results: dict[str, Sequence[EvalResult]], classes: Sequence[str]):
    """Per-class test accuracy, mean over seeds with 95% CI, per variant."""
    rows = [{"variant": name, "class": c, "accuracy": acc}
            for name, evals in results.items() for ev in evals for c, acc in zip(classes, ev.per_class_accuracy)]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    sns.barplot(pd.DataFrame(rows), x="class", y="accuracy", hue="variant", errorbar=("ci", 95), ax=ax)
    ax.tick_params(axis="x", rotation=30)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    return fig


def sample_grid(data: TensorData, per_class: int = 8, title: str = ""):
    """A few images of every class (the first input, first channel, de-normalised by its range)."""
    images, targets = data.inputs[0][:, 0].cpu(), data.targets.cpu()
    fig, axes = plt.subplots(data.num_classes, per_class, figsize=(per_class * 0.9, data.num_classes * 0.95))
    for c in range(data.num_classes):
        index = (targets == c).nonzero().squeeze(1)[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(index):
                ax.imshow(images[index[j]], cmap="gray_r")
        axes[c, 0].set_title(data.classes[c], fontsize=8, loc="left", x=-0.1)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def cost_tradeoff(table: pd.DataFrame, y: str = "test_acc",
                  costs: Sequence[str] = ("gmacs", "latency_cpu_b1_ms", "params_m"), label: str = "label"):
    """Accuracy (mean with 95% CI bars) against each cost, one point per stage variant."""
    fig, axes = plt.subplots(1, len(costs), figsize=(4.6 * len(costs), 3.8), squeeze=False, sharey=True)
    for ax, cost in zip(axes[0], costs):
        data = table.dropna(subset=[cost, f"{y}_mean"])
        lo = (data[f"{y}_mean"] - data[f"{y}_ci_low"]).fillna(0)
        hi = (data[f"{y}_ci_high"] - data[f"{y}_mean"]).fillna(0)
        ax.errorbar(data[cost], data[f"{y}_mean"], yerr=[lo, hi], fmt="o", capsize=3)
        for _, row in data.iterrows():
            ax.annotate(row[label], (row[cost], row[f"{y}_mean"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
        ax.set_xlabel(COST_LABELS.get(cost, cost))
    axes[0][0].set_ylabel(f"{y.replace('_', ' ')} (mean, 95% CI over seeds)")
    fig.tight_layout()
    return fig


def variant_bars(table: pd.DataFrame, metrics: Sequence[str] = ("test_acc",), label: str = "label",
                 reference: str | None = None):
    """One panel per metric: the mean of each variant with its 95% CI over seeds as an error bar;
    ``reference`` (a label) is drawn as a dashed line so effects read off against it."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.5, 0.9 * len(table)) * len(metrics) / 1.3, 3.8),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        mean = table[f"{metric}_mean"]
        err = [(mean - table[f"{metric}_ci_low"]).fillna(0), (table[f"{metric}_ci_high"] - mean).fillna(0)]
        colours = ["0.6" if lab == reference else "C0" for lab in table[label]]
        ax.bar(range(len(table)), mean, yerr=err, capsize=3, color=colours)
        ax.set_xticks(range(len(table)), table[label], rotation=30, ha="right", fontsize=8)
        if reference is not None and reference in set(table[label]):
            ax.axhline(float(mean[table[label] == reference].iloc[0]), ls="--", c="0.4", lw=1)
        low = (mean - err[0]).min()
        if metric.endswith("_acc") or metric.endswith("_f1"):
            ax.set_ylim(max(0.0, low - 0.05), min(1.0, (mean + err[1]).max() + 0.02))
        ax.set_ylabel(f"{metric.replace('_', ' ')} (mean, 95% CI)")
    fig.tight_layout()
    return fig
