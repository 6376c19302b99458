"""Figures shared by the notebooks: curves over seeds, confusion matrices, cost trade-offs."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

from .data import TensorData
from .evaluate import EvalResult
from .results import COST_LABELS
from .stats import VERDICTS

sns.set_theme(context="notebook", style="whitegrid")

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
                  costs: Sequence[str] = ("gmacs", "latency_cpu_b1_ms", "params_m"), label: str = "label",
                  max_labels: int = 12):
    """Accuracy (mean with 95% CI bars) against each cost, one point per stage variant; with
    more than ``max_labels`` points (the report's every stage), points are coloured by the stage
    (the part of ``label`` before '/') instead of labelled one by one."""
    fig, axes = plt.subplots(1, len(costs), figsize=(4.6 * len(costs), 3.8), squeeze=False, sharey=True)
    by_stage = len(table) > max_labels
    groups = table.groupby(table[label].str.split("/").str[0], sort=False) if by_stage else [(None, table)]
    for ax, cost in zip(axes[0], costs):
        for i, (stage, rows) in enumerate(groups):
            _points(ax, rows.dropna(subset=[cost, f"{y}_mean"]), cost, y, None if by_stage else label,
                    **({"color": f"C{i % 10}", "fmt": "osD^v"[i // 10 % 5], "label": stage} if by_stage else {}))
        ax.set_xlabel(COST_LABELS.get(cost, cost))
    axes[0][0].set_ylabel(f"{y.replace('_', ' ')} (mean, 95% CI over seeds)")
    if by_stage:
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), title="stage", title_fontsize=8)
    fig.tight_layout()
    return fig


def _points(ax, data: pd.DataFrame, x: str, y: str, names: str | None, **style) -> None:
    """``y``'s mean with 95% CI bars against ``x``, each point labelled with its ``names`` column
    (``None``: unlabelled)."""
    lo = (data[f"{y}_mean"] - data[f"{y}_ci_low"]).fillna(0)
    hi = (data[f"{y}_ci_high"] - data[f"{y}_mean"]).fillna(0)
    ax.errorbar(data[x], data[f"{y}_mean"], yerr=[lo, hi], fmt=style.pop("fmt", "o"), capsize=3, **style)
    if names is None:
        return
    for i, (_, row) in enumerate(data.iterrows()):  # alternate above / below: neighbours stay legible
        ax.annotate(row[names], (row[x], row[f"{y}_mean"]), fontsize=7, xytext=(4, 3 if i % 2 == 0 else -9),
                    textcoords="offset points")


def pareto(table: pd.DataFrame, x: str = "latency_cpu_b1_ms", y: str = "test_acc", label: str = "label",
           front: str = "pareto", logx: bool = True, label_dominated: int = 12):
    """``y`` (mean, 95% CI over seeds) against the cost ``x`` (``logx``: on a log axis, as costs
    of models span orders of magnitude), the rows of the boolean column ``front`` (see
    :func:`resnet_review.results.pareto_front`) highlighted and joined: no other point is both
    cheaper and more accurate than one of them. Dominated points are labelled only where there
    are at most ``label_dominated`` of them (the table beside the figure names them all)."""
    data = table.dropna(subset=[x, f"{y}_mean"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dominated = data[~data[front]]
    _points(ax, dominated, x, y, label if len(dominated) <= label_dominated else None, color="0.6",
            label=f"dominated ({len(dominated)})")
    best = data[data[front]].sort_values(x)
    _points(ax, best, x, y, label, color="C3", label="Pareto front")
    ax.step(best[x], best[f"{y}_mean"], where="post", color="C3", ls="--", lw=1)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(COST_LABELS.get(x, x) + " (lower is better)")
    ax.set_ylabel(f"{y.replace('_', ' ')} (mean, 95% CI over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def trend(table: pd.DataFrame, x: str, metrics: Sequence[str] = ("test_acc",), label: str = "label",
          logx: bool = False, xlabel: str | None = None):
    """One panel per metric: its mean with 95% CI bars over seeds against a numeric column ``x``
    (input size, share of the data, depth), points joined in ``x`` order and labelled."""
    data = table.sort_values(x)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        if f"{metric}_mean" in data:
            mean = data[f"{metric}_mean"]
            err = [(mean - data[f"{metric}_ci_low"]).fillna(0), (data[f"{metric}_ci_high"] - mean).fillna(0)]
        else:  # a plain column (e.g. MACs): no interval
            mean, err = data[metric], None
        ax.errorbar(data[x], mean, yerr=err, fmt="-o", capsize=3)
        for xv, yv, name in zip(data[x], mean, data[label]):
            ax.annotate(name, (xv, yv), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel or x.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " ") + (" (mean, 95% CI)" if err is not None else ""))
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


def trace_blocks(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(module name, class, output shape)`` of the model's blocks in the order one forward pass
    calls them (a module shared by two inputs appears twice).  Containers are opened: a
    ``ModuleList``, the model itself and any ResNet trunk (a module with ``layer1``); everything
    else is one block."""
    blocks: list[tuple[str, str, tuple[int, ...]]] = []
    handles = []

    def opened(module: nn.Module) -> bool:
        return module is model or isinstance(module, nn.ModuleList) or hasattr(module, "layer1")

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if opened(child):
                visit(child, f"{full}.")
            elif not isinstance(child, nn.Identity):
                handles.append(child.register_forward_hook(
                    lambda m, args, out, full=full: blocks.append(
                        (full, type(m).__name__, tuple(out.shape[1:]) if torch.is_tensor(out) else ()))))

    visit(model, "")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return blocks


def architecture(model: nn.Module, input_shapes: Sequence[tuple[int, ...]], title: str = "", per_column: int = 12):
    """The model's blocks as traced from the code (:func:`trace_blocks`), one box per call with
    its output shape, in calling order, coloured by the top-level module they belong to."""
    inputs = tuple(torch.zeros((1, *shape)) for shape in input_shapes)
    blocks = trace_blocks(model, inputs)
    groups = list(dict.fromkeys(name.split(".")[0] for name, _, _ in blocks))
    palette = dict(zip(groups, sns.color_palette("pastel", len(groups))))
    columns = max(1, -(-len(blocks) // per_column))
    fig, ax = plt.subplots(figsize=(3.3 * columns, 0.55 * min(per_column, len(blocks)) + 0.9))
    ax.set_xlim(0, columns)
    ax.set_ylim(per_column if len(blocks) > per_column else len(blocks), -1.0)
    ax.axis("off")
    shapes = " + ".join("x".join(map(str, s)) for s in input_shapes)
    ax.text(0.05, -0.75, f"input {shapes}", fontsize=8, weight="bold", va="center")
    calls: dict[str, int] = {}
    for i, (name, cls, shape) in enumerate(blocks):
        col, row = divmod(i, per_column)
        calls[name] = calls.get(name, 0) + 1
        again = f"  (call {calls[name]})" if calls[name] > 1 else ""
        label = f"{name}  ·  {cls}{again}\n→ {'x'.join(map(str, shape))}"
        ax.text(col + 0.05, row, label, fontsize=7, va="center", family="monospace",
                bbox={"boxstyle": "round,pad=0.3", "fc": palette[name.split('.')[0]], "ec": "0.5"})
    fig.suptitle(title or f"{type(model).__name__}, as traced from the code ({len(blocks)} blocks, top to bottom, "
                 "then left to right)", fontsize=9)
    fig.tight_layout()
    return fig


def image_rows(sets: dict[str, TensorData], per_set: int = 6):
    """The first images of each named dataset, one row each (first input only): e.g. the
    corrupted test sets, or the views a two-modality model sees."""
    names = list(sets)
    fig, axes = plt.subplots(len(names), per_set, figsize=(1.2 * per_set, 1.25 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        data = sets[name]
        images = data.inputs[0][:per_set, 0].float().cpu()
        for ax, image in zip(row, images):
            ax.imshow(image * data.meta.get("std", 1.0) + data.meta.get("mean", 0.0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig



def accuracy_vs_data(table: pd.DataFrame, hue: str = "method", y: str = "test_acc", chance: float | None = None):
    """Accuracy (mean with 95% CI bars over seeds) against the share of training data
    (``train_fraction``, log axis, ticks naming the images it is), one line per ``hue`` (e.g.
    transfer method); ``chance`` is drawn as a dashed line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    data = table.dropna(subset=["train_fraction", f"{y}_mean"]).sort_values("train_fraction")
    for i, (name, group) in enumerate(data.groupby(hue, sort=False)):
        lo = (group[f"{y}_mean"] - group[f"{y}_ci_low"]).fillna(0)
        hi = (group[f"{y}_ci_high"] - group[f"{y}_mean"]).fillna(0)
        dodge = 1.06 ** (i - (data[hue].nunique() - 1) / 2)  # side by side, so the bars do not hide each other
        ax.errorbar(group["train_fraction"] * dodge, group[f"{y}_mean"], yerr=[lo, hi], marker="o", capsize=3,
                    label=name)
    if chance is not None:
        ax.axhline(chance, ls="--", c="0.5", lw=1, label="chance")
    ticks = data.groupby("train_fraction")["train_images"].first()
    ax.set_xscale("log")
    ax.set_xticks(ticks.index, [f"{f:.0%}\n({n:.0f} images)" for f, n in ticks.items()])
    ax.minorticks_off()
    ax.set_xlim(ticks.index.min() / 1.6, ticks.index.max() * 1.6)
    ax.set_ylim(0, 1)
    ax.set_xlabel("share of the training images")
    ax.set_ylabel(f"{y.replace('_', ' ')} (mean, 95% CI over seeds)")
    ax.legend(title=hue, fontsize=8)
    fig.tight_layout()
    return fig


def forest(measured: pd.DataFrame, tiers: Sequence[str] = ()):
    """Every measured claim's effect with its 95% CI, one row per claim (grouped by section, in
    catalogue order) and one marker per evidence tier, side by side; one panel per metric, since
    an accuracy difference and a speed-up share no axis. Filled markers: the verdict survives
    Benjamini–Hochberg; hollow: it does not, or was never decisive."""
    catalogue = list(dict.fromkeys(measured["id"]))
    data = measured[measured["effect"].notna()]
    metrics = list(dict.fromkeys(data["metric"]))
    heights = [max(1, data.loc[data["metric"] == m, "id"].nunique()) for m in metrics]
    fig, axes = plt.subplots(len(metrics) or 1, 1, figsize=(9, 0.32 * sum(heights) + 1.2 * len(heights)),
                             gridspec_kw={"height_ratios": heights or [1]}, squeeze=False)
    order = [t for t in tiers if t in set(data["tier"])] or list(dict.fromkeys(data["tier"]))
    colours = dict(zip(order, sns.color_palette("colorblind", len(order))))
    for ax, metric in zip(axes[:, 0], metrics):
        rows = data[data["metric"] == metric]
        ids = [i for i in catalogue if i in set(rows["id"])]
        for k, tier in enumerate(t for t in order if t in set(rows["tier"])):
            part = rows[rows["tier"] == tier]
            y = np.array([ids.index(i) for i in part["id"]]) + 0.2 * (k - 0.5)
            decisive = part["verdict_bh"].isin(VERDICTS[:2]).to_numpy()
            ax.errorbar(part["effect"], y, xerr=[part["effect"] - part["ci_low"], part["ci_high"] - part["effect"]],
                        fmt="none", ecolor=colours[tier], elinewidth=1.2)
            ax.scatter(part["effect"], y, s=28, edgecolors=[colours[tier]], label=tier, zorder=3,
                       facecolors=[colours[tier] if d else "white" for d in decisive])
        ax.axvline(0, color="0.4", lw=0.8, ls="--")
        labels = [f"{rows.loc[rows['id'] == i, 'section'].iloc[0]}  {i}" for i in ids]
        ax.set_yticks(range(len(ids)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"effect on {metric} (treatment − control, 95% CI over seeds)", fontsize=9)
    handles = {h.get_label(): h for ax in axes[:, 0] for h in ax.collections if not h.get_label().startswith("_")}
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=min(3, len(handles)) or 1, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    return fig
