"""How the review's techniques work together (notebook 17): which gains add up, which overlap.

Every cell trains on one data regime, a share of the training images for more epochs: that of
the ``control``, the plain model of another stage on the same images (by default the dropout
stage's ResNet50 on 10% for 5x the epochs), read, not retrained, as the cell with no technique.

* A 2x2 factorial (``factorial``: ``first``, ``second``, ``both``; the control is neither): each
  technique's gain alone and on top of the other, their main effects, and the interaction, per
  seed ``both - first - second + none``. The gains *add up* when its 95% CI holds 0, *reinforce*
  each other when it lies above, *overlap* when below, and *conflict* when, moreover, the pair is
  less accurate than the better technique alone (:func:`combination`).
* A step-wise path (``steps``): techniques added one at a time, each step's gain over the last.
* One cell compressed (``compress``): int8 post-training quantisation, structured pruning with a
  fine-tune on the cell's images by the cell's own techniques, and both; speed-ups side by side.
  The pruned models are judged against the cell fine-tuned alike without pruning
  (``<source>_finetuned``), so that the extra epochs are not counted as pruning's.
* The accuracy against CPU-latency Pareto front of every cell, compressed model and the baseline
  (:func:`resnet_review.results.pareto_front`).
* :class:`SynergyParams`: the ``synergy`` section of params.yaml; :func:`run_synergy`: notebook 17.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from pydantic import Field, field_validator, model_validator
from torch import nn

from ..config import (
    Budget,
    ParamsError,
    PerProfile,
    PlannedRun,
    SourceModel,
    Strict,
    check_recipe_overrides,
    register_stage_schema,
    scaled_epochs,
)
from ..experiment import Stage
from ..results import pareto_front
from ..runs import Comparable, SeedSeries, VariantResult, per_seed
from ..stats import VERDICTS, Estimate, verdict
from .augmentation import AugmentVariant, stage_augmentation
from .compression import PROFILE_ROUNDS, PruneTarget, int8_run, load_compressed, prune_run
from .distillation import DistillationParams, distillation_hooks, seed_teachers


# --------------------------------------------------------------------------- params
def dense_finetuned(source: str) -> str:
    """The compressed cell fine-tuned without pruning: the pruned models' control."""
    return f"{source}_finetuned"


class SynergyVariant(AugmentVariant):
    """A cell of the synergy design: a :class:`Variant` with its augmentations (RandAugment etc.
    with the augmentation stage's settings) and, with ``distill``, the distillation loss."""

    distill: bool = Field(False, description="learn from the seed's teacher (the stage's temperature and alpha)")


class FactorialCells(Strict):
    """The three trained cells of a 2x2 factorial; the fourth (neither technique) is ``control``."""

    first: str = Field("se", description="the variant with the first technique alone")
    second: str = Field("randaugment", description="the variant with the second technique alone")
    both: str = Field("se_randaugment", description="the variant with both")


class SynergyCompression(Strict):
    """How the last cell's trained models are compressed: int8 post-training quantisation, and
    pruning followed by a fine-tune on the cell's images with the cell's techniques."""

    source: str = Field("full", description="the variant whose trained models are compressed")
    calibration_batches: int = Field(8, gt=0, description="training batches int8 activation ranges are observed on")
    prune: PruneTarget = PruneTarget(amount=0.5)
    finetune_epochs_scale: float = Field(0.5, gt=0, le=100, description="fine-tuning epochs after pruning, as a "
                                         "multiple of the source cell's epochs (at least 1)")
    train: dict[str, Any] = Field(default_factory=dict, description="recipe overrides of the fine-tune")
    pruned_int8: bool = Field(True, description="quantise the pruned models too")
    taylor_batches: int = Field(4, gt=0, description="training batches whose gradients rank channels (taylor)")
    prune_rounds: PerProfile = Field(PROFILE_ROUNDS, description="rounds of the structured pruning (as in "
                                     "the pruning stage)")

    _check_train = field_validator("train")(check_recipe_overrides)


@register_stage_schema("synergy")
class SynergyParams(DistillationParams):
    """Notebook 17: cells combining techniques on one data regime, compared with ``control`` (the
    plain model on the same images, another stage's variant): a 2x2 ``factorial``, a step-wise
    path (``steps``, each step against the one before, the first against ``control``) and the
    compression of one cell."""

    control: SourceModel = Field(SourceModel(stage="dropout", variant="low_data_drop_rate_0"),
                                 description="the plain model on the cells' images and epochs (read, not retrained)")
    factorial: FactorialCells = FactorialCells()
    steps: list[str] = Field(default_factory=list, description="variants in the order techniques are added")
    compress: SynergyCompression = SynergyCompression()
    variants: dict[str, SynergyVariant] = Field(default_factory=dict)

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """Every cell (a distilled one with its teacher's forward passes) and the compressed cell's two
        fine-tunes on that cell's images (pruned, and dense as their control)."""
        cells = self.planned_variants(profile)
        runs = [self._variant_run(n, v, budget, teacher_from=self.teacher.stage if v.distill else None)
                for n, v in cells.items()]
        source = cells.get(self.compress.source)
        if source is not None:
            cell = self._variant_run("pruned_finetuned", source, budget,
                                     teacher_from=self.teacher.stage if source.distill else None)
            finetune = replace(cell, epochs=scaled_epochs(cell.epochs, self.compress.finetune_epochs_scale))
            runs += [replace(finetune, variant=dense_finetuned(self.compress.source)), finetune]
        return runs

    @model_validator(mode="after")
    def _cells_are_variants(self) -> "SynergyParams":
        named = [(f"factorial.{k}", v) for k, v in self.factorial.model_dump().items()]
        named += [(f"steps[{i}]", v) for i, v in enumerate(self.steps)] + [("compress.source", self.compress.source)]
        bad = [f"{key} names no variant ({name!r})" for key, name in named if name not in self.variants]
        if bad:
            raise ValueError(f"{'; '.join(bad)}; variants: {', '.join(self.variants) or 'none'}")
        return self


# --------------------------------------------------------------------------- running
COMBINATIONS = ("add up", "reinforce", "overlap", "conflict")


def combination(interaction: Estimate, both_minus_best: Estimate) -> str:
    """How two techniques combine, from the interaction ``both - first - second + none`` and the
    pair's gain over the better technique alone (``both - best``), each a paired estimate with
    its 95% CI: the interaction's CI holds 0 -> "add up"; lies above 0 -> "reinforce"; below ->
    "overlap" (less than the sum of the gains), or "conflict" when the pair is also below the
    better technique alone."""
    outcome = verdict(interaction, +1)
    if outcome == VERDICTS[2]:
        return COMBINATIONS[0]
    if outcome == VERDICTS[0]:
        return COMBINATIONS[1]
    return COMBINATIONS[3] if verdict(both_minus_best, +1) == VERDICTS[1] else COMBINATIONS[2]


def check_control(stage: Stage) -> dict[str, list[float]]:
    """The control's per-seed results, after checking that it ran under this budget and that
    every cell of this profile trains on its share of the images, for its epochs, at its input
    size: a :class:`~resnet_review.config.ParamsError` naming the cells' keys otherwise."""
    c = stage.config.control
    block = stage.reference_block(c.stage, c.variant)  # same profile and budget, or a clear error
    problems = []
    for name in stage.variant_names():
        v = stage.config.variants[name]
        cell = {"train_fraction": (v.train_fraction, "train_fraction"),
                "epochs": (stage.variant_epochs(name), "epochs_scale"),
                "img_size": (v.img_size or stage.budget.img_size, "img_size")}
        for key, (mine, setting) in cell.items():
            theirs = block.get(key, stage.budget.img_size if key == "img_size" else None)
            if theirs != mine:
                problems.append(f"  {stage.name}.variants.{name}.{setting}: the cell trains with {key} {mine}, "
                                f"the control {c.stage}/{c.variant} with {theirs}")
    if problems:
        raise ParamsError(f"the cells of '{stage.name}' must share the data regime of their control "
                          f"({stage.name}.control):\n" + "\n".join(problems))
    return block["per_seed"]


def techniques(stage: Stage, name: str | None) -> list[str]:
    """What a cell adds to the stage's plain model (``None``: the control, nothing)."""
    if name is None:
        return []
    v = stage.config.variants[name]
    added = [v.model] if v.model and v.model != stage.config.model else []
    added += [f"{k}={val}" for k, val in v.model_kwargs.items()] + list(v.augment)
    return added + (["distillation"] if v.distill else [])


def cell_hooks(stage: Stage, name: str, teacher) -> dict[str, Any]:
    """The engine hooks of cell ``name``: its augmentations (the augmentation stage's settings) as
    the batch transform, and the distillation loss of each seed's teacher when it distils."""
    v, cfg = stage.config.variants[name], stage.config
    hooks: dict[str, Any] = {"batch_transform": stage_augmentation(stage, v.augment,
                                                                   stage.params.stage("augmentation"))}
    if v.distill:
        hooks["seed_hooks"] = distillation_hooks(teacher, temperature=cfg.temperature, alpha=cfg.alpha)
    return hooks


def run_cells(stage: Stage, teacher) -> dict[str, VariantResult]:
    """Train every cell of this profile over the seeds, what it adds written beside its metrics."""
    results = {}
    for name in stage.variant_names():
        results[name] = stage.run_variant(name, **cell_hooks(stage, name, teacher))
        stage.annotate(name, techniques=" + ".join(techniques(stage, name)) or "none")
    return results


def _row(stage: Stage, what: str, treatment: Comparable, control: Comparable | None) -> dict[str, Any]:
    effect, outcome = stage.effect(treatment, control)
    return {"comparison": what, "effect": effect.mean, "ci_low": effect.ci_low, "ci_high": effect.ci_high,
            "seeds": effect.n, "verdict": outcome}


def _main_effect(name: str, pairs: list[tuple[Comparable, Comparable]], metric: str) -> SeedSeries:
    """Per seed, the mean of ``treatment - control`` over ``pairs`` (a factor's main effect)."""
    diffs = [(per_seed(t, metric), per_seed(c, metric)) for t, c in pairs]
    seeds = sorted(diffs[0][0])
    return SeedSeries(name, {s: sum(t[s] - c[s] for t, c in diffs) / len(diffs) for s in seeds})


def factorial_table(stage: Stage, none: Comparable, first: Comparable, second: Comparable, both: Comparable,
                    names: tuple[str, str], metric: str = "test_acc") -> tuple[pd.DataFrame, Estimate, str]:
    """The 2x2 factorial of two techniques (``names``) from the per-seed results of its four
    cells: each gain alone and on top of the other, the main effects, the pair against the
    better one alone, and the interaction; returns the table, the interaction and how the two
    combine (:func:`combination`)."""
    a, b = names
    means = {n: sum(per_seed(x, metric).values()) / len(per_seed(x, metric)) for n, x in ((a, first), (b, second))}
    best, best_cell = (a, first) if means[a] >= means[b] else (b, second)
    rows = [_row(stage, f"{a} alone", first, none), _row(stage, f"{a} on top of {b}", both, second),
            _row(stage, f"{a}: main effect", _main_effect(a, [(first, none), (both, second)], metric), None),
            _row(stage, f"{b} alone", second, none), _row(stage, f"{b} on top of {a}", both, first),
            _row(stage, f"{b}: main effect", _main_effect(b, [(second, none), (both, first)], metric), None),
            _row(stage, f"{a} + {b} over none", both, none),
            _row(stage, f"{a} + {b} over {best} alone", both, best_cell)]
    interaction = stage.interaction(both, second, first, none, metric=metric, name=f"{a}_x_{b}")
    effect, _ = stage.effect(interaction, None, metric)
    both_minus_best, _ = stage.effect(both, best_cell, metric)
    combined = combination(effect, both_minus_best)
    rows.append(_row(stage, f"interaction {a} x {b} (both - {a} - {b} + none)", interaction, None)
                | {"verdict": combined})
    return pd.DataFrame(rows).set_index("comparison"), effect, combined


def steps_table(stage: Stage, control: Comparable, results: dict[str, VariantResult],
                metric: str = "test_acc") -> pd.DataFrame:
    """The step-wise path: each cell of ``steps`` that ran, what it adds to the one before (the
    control first), its gain over that one and over the control, with 95% CIs and verdicts."""
    c = stage.config.control
    path = [(None, control)] + [(n, results[n]) for n in stage.config.steps if n in results]
    rows = []
    for (before, prev), (name, cell) in zip(path, path[1:]):
        step, outcome = stage.effect(cell, prev, metric)
        total, _ = stage.effect(cell, control, metric)
        added = [t for t in techniques(stage, name) if t not in techniques(stage, before)]
        rows.append({"step": name, "after": before or f"none ({c.stage}/{c.variant})", "adds": " + ".join(added),
                     metric: cell.estimate(metric).mean, "gain": step.mean, "gain_ci_low": step.ci_low,
                     "gain_ci_high": step.ci_high, "verdict": outcome, "gain_over_none": total.mean,
                     "gain_over_none_ci_low": total.ci_low, "gain_over_none_ci_high": total.ci_high})
    return pd.DataFrame(rows).set_index("step")


def compress_cell(stage: Stage, teacher) -> tuple[dict[str, VariantResult], dict[str, str]]:
    """The ``compress.source`` cell's trained models, per seed: int8 (post-training, calibrated
    on the cell's training images), structurally pruned and fine-tuned on the cell's images with
    the cell's own techniques, and (``pruned_int8``) the pruned ones quantised too; beside them
    ``<source>_finetuned``, the cell fine-tuned alike without pruning. Returns the models and,
    for each, the variant it is compared with: the cell for int8 and the dense fine-tune, the
    dense fine-tune for what was pruned (both sides get the same extra epochs)."""
    cfg = stage.config.compress
    source_name, v = cfg.source, stage.config.variants[cfg.source]
    splits = stage.splits_for(v.train_fraction, v.img_size, v.view)
    model = v.model or stage.config.model

    def source(seed: int) -> nn.Module:
        return stage.load_trained(stage.name, source_name, seed, model=model, **v.model_kwargs)

    info = {"source": f"{stage.name}/{source_name}", "train_images": len(splits.train)}
    epochs = scaled_epochs(stage.variant_epochs(source_name), cfg.finetune_epochs_scale)
    recipe = v.recipe(stage.recipe).model_copy(update=cfg.train)
    finetune = {"epochs": epochs, "splits": splits, "recipe": recipe, **cell_hooks(stage, source_name, teacher)}
    dense = dense_finetuned(source_name)
    out = {dense: stage.run(dense, source, info=info | {"finetune_epochs": epochs, "method": "none",
                                                         "amount": 0.0}, **finetune),
           f"{source_name}_int8": int8_run(stage, f"{source_name}_int8", source, splits=splits,
                                           calibration_batches=cfg.calibration_batches,
                                           info=info | {"precision": "int8", "method": "ptq"})}
    pruned = f"{source_name}_pruned{cfg.prune.amount * 100:.0f}"
    out[pruned] = prune_run(stage, pruned, source, cfg.prune, info=info | {"finetune_epochs": epochs},
                            taylor_batches=cfg.taylor_batches,
                            rounds=cfg.prune_rounds.under(stage.params.profile), **finetune)
    controls = {dense: source_name, f"{source_name}_int8": source_name, pruned: dense}
    if cfg.pruned_int8:
        weights = {r.seed: r.weights_path for r in out[pruned].runs}
        build = stage.model_factory(model, splits=splits, **v.model_kwargs)

        def pruned_model(seed: int) -> nn.Module:
            return load_compressed(weights[seed], build).to(stage.accel.device)

        out[f"{pruned}_int8"] = int8_run(stage, f"{pruned}_int8", pruned_model, splits=splits,
                                         calibration_batches=cfg.calibration_batches,
                                         info=info | {"source": f"{stage.name}/{pruned}", "precision": "int8",
                                                      "method": "ptq"})
        controls[f"{pruned}_int8"] = dense
    return out, controls


def compression_table(stage: Stage, source: str, controls: dict[str, str], latency: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, its change from each model's control (``controls``: paired by seed, 95% CI),
    cost and side-by-side speed-ups over ``source``."""
    rows = []
    for name in [source, *controls]:
        result, control = stage.results[name], controls.get(name)
        change, _ = stage.effect(result, stage.results[control]) if control else (None, None)
        prof = result.profile.scalars() if result.profile else {}
        rows.append({"variant": name, "compared_with": control or "", "test_acc": result.estimate("test_acc").mean,
                     "change": change.mean if change else 0.0, "change_ci_low": change.ci_low if change else None,
                     "change_ci_high": change.ci_high if change else None,
                     **{k: prof.get(k) for k in ("gmacs", "params_m", "checkpoint_mb")},
                     **latency.loc[name].to_dict()})
    return pd.DataFrame(rows).set_index("variant")


def front_frame(stage: Stage, x: str = "latency_cpu_b1_ms", y: str = "test_acc_mean") -> pd.DataFrame:
    """Every cell and compressed model of the stage, the control and the baseline, with whether
    each is on the front of lower ``x`` and higher ``y``."""
    c = stage.config.control
    frame = stage.frame(("baseline", "resnet50"), (c.stage, c.variant))
    frame["pareto"] = pareto_front(frame, x, y)
    return frame.sort_values(x).reset_index(drop=True)


@dataclass
class Synergy:
    """What notebook 17 shows."""

    results: dict[str, VariantResult]
    control: dict[str, list[float]]
    teacher: str | None
    factorial: pd.DataFrame | None
    interaction: Estimate | None
    combination: str | None
    steps: pd.DataFrame
    compression: pd.DataFrame
    compressed: list[str]
    speedups: dict[str, dict[str, Estimate]]
    pareto: pd.DataFrame


def run_synergy(stage: Stage) -> Synergy:
    """Check the control and the teacher, train the cells, tabulate the factorial and the steps,
    compress the ``compress.source`` cell and time it side by side, and find the Pareto front."""
    cfg = stage.config
    control = check_control(stage)
    stage.reference("baseline", "resnet50")  # the Pareto front's reference, checked before training
    distils = any(cfg.variants[n].distill for n in stage.variant_names())
    teacher_name, teacher = seed_teachers(stage) if distils else (None, None)
    results = run_cells(stage, teacher)
    f = cfg.factorial
    factorial, interaction, combined = None, None, None
    if all(n in results for n in (f.first, f.second, f.both)):
        factorial, interaction, combined = factorial_table(stage, control, results[f.first], results[f.second],
                                                           results[f.both], (f.first, f.second))
    steps = steps_table(stage, control, results)
    compressed, controls = compress_cell(stage, teacher)
    latency, speedups = stage.compare_latency(cfg.compress.source, [cfg.compress.source, *compressed])
    compression = compression_table(stage, cfg.compress.source, controls, latency)
    stage.log_metrics(combination=combined, teacher=teacher_name)
    return Synergy({**results, **compressed}, control, teacher_name, factorial, interaction, combined, steps,
                   compression, [n for n in compressed if n != dense_finetuned(cfg.compress.source)],
                   speedups, front_frame(stage))
