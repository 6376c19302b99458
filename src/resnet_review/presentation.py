"""What a stage's notebook shows in words and tables: its budget, its claims measured, its
variants so far. Nothing here changes a number; :mod:`resnet_review.trained` leaves it out of
the code whose change retrains a model, so a change of wording re-renders the notebooks only."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from .claims import ClaimSpec, sentence
from .claims import Results as ClaimResults
from .claims import evaluate as evaluate_claim
from .config import Budget, Recipe, StageParams
from .results import collect
from .runs import VariantResult, finite


def describe(profile: str, budget: Budget, recipe: Recipe, config: StageParams, device: torch.device) -> str:
    """The budget, device and recipe a stage runs under, and its variants, as Markdown."""
    b = budget
    lines = [f"Profile **{profile}**: {b.train_size} training images, {b.val_size} validation, "
             f"{b.test_size} test, {b.epochs} epochs, batch {b.batch_size}, seeds {b.seeds}, {b.img_size} px, "
             f"device `{device}`. Recipe: `{recipe.model_dump(exclude_defaults=True)}`."]
    for name, v in config.variants.items():
        diff = v.model_dump(exclude_defaults=True)
        lines.append(f"* `{name}`: model `{v.model or config.model}`"
                     + (f", {', '.join(f'{k}={val}' for k, val in diff.items() if k != 'model')}" if diff else ""))
    return "\n".join(lines)


def budget_note(profile: str, budget: Budget) -> str:
    """How far the numbers of this profile can be trusted, for a notebook's conclusion."""
    if profile == "gpu":
        return (f"*Full-data result of the `gpu` profile ({len(budget.seeds)} seeds); an effect is called "
                "supported or not only where its 95% CI excludes zero.*")
    return (f"*Small-budget result (profile `{profile}`: {budget.train_size} images x {budget.epochs} epochs, "
            f"{len(budget.seeds)} seeds). It tests the claim at this budget only; 'inconclusive' means the 95% CI "
            "over seeds holds zero, not that the effect is absent. The `gpu` profile gives the full-data answer.*")


def claims_list(specs: list[ClaimSpec], stages_dir: Path, written: dict[str, dict], *, stage: str,
                claims_file: str) -> tuple[list[str], dict[str, dict]]:
    """Each claim of ``specs`` measured by :func:`resnet_review.claims.evaluate` (the function the
    report uses) on the results under ``stages_dir``: its sentence, a Markdown bullet, and the
    outcome of each paired claim, for metrics.json (a stage's own estimates are logged already)."""
    results, lines, outcomes = ClaimResults(stages_dir), [], {}
    for spec in specs:
        row = evaluate_claim(spec, results, written)
        if not spec.stage_claim:
            outcomes[spec.id] = finite({
                "verdict": row["verdict"], "comparison": row["comparison"], "metric": row["metric"],
                "effect": {"mean": row["effect"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                           "n": row["seeds"]},
                "interval": row["interval"], "note": row["note"], "profile": row["profile"]})
        lines.append("* " + sentence(row))
    if not specs:
        lines.append(f"* No claim in {claims_file} has its treatment in stage `{stage}`.")
    return lines, outcomes


def results_table(results: dict[str, VariantResult]) -> pd.DataFrame:
    """Mean ± 95% CI of the headline metrics of every variant run so far."""
    rows = []
    for name, result in results.items():
        row = {"variant": name}
        for metric in ("test_acc", "test_macro_f1", "train_val_gap"):
            row[metric] = str(result.estimate(metric))
        if result.profile:
            row |= {k: round(v, 3) for k, v in result.profile.scalars().items() if k != "threads"}
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def stage_frame(stages_dir: Path, stage: str, references: tuple[tuple[str, str], ...]) -> pd.DataFrame:
    """A stage's variants plus ``(stage, variant)`` references from sibling stages, in the report's
    flattened form (:func:`resnet_review.results.collect`): what :mod:`resnet_review.plots` draws."""
    table = collect(stages_dir, stages=[stage, *{s for s, _ in references}])
    if table.empty:
        return table
    keep = (table["stage"] == stage) | table[["stage", "variant"]].apply(tuple, axis=1).isin(references)
    table = table[keep].copy()
    table["label"] = [v if s == stage else f"{s}/{v}" for s, v in zip(table["stage"], table["variant"])]
    return table.reset_index(drop=True)
