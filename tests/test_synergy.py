"""The synergy stage (notebook 17): the Pareto front, how two techniques combine in a 2x2
factorial, its params, and the guard that every cell shares its control's data regime."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from resnet_review.config import ParamsError, validate_params
from resnet_review.experiment import Stage
from resnet_review.results import comparable_budget, pareto_front
from resnet_review.stats import Estimate
from resnet_review.techniques.synergy import (
    check_control,
    combination,
    compress_cell,
    compression_table,
    factorial_table,
)


def test_the_pareto_front_keeps_the_non_dominated_points_and_ties():
    points = pd.DataFrame([("fast", 5.0, 0.70), ("accurate", 10.0, 0.80), ("twin_of_fast", 5.0, 0.70),
                           ("slower_and_worse", 12.0, 0.75), ("as_fast_but_worse", 5.0, 0.60),
                           ("as_good_but_slower", 20.0, 0.80), ("no_latency", math.nan, 0.99),
                           ("no_accuracy", 1.0, math.nan), ("fastest_and_worst", 1.0, 0.10)],
                          columns=["label", "latency", "acc"], index=list("abcdefghi"))
    front = pareto_front(points, "latency", "acc")
    assert front.index.equals(points.index) and front.dtype == bool
    assert set(points.label[front]) == {"fast", "twin_of_fast", "accurate", "fastest_and_worst"}
    # without the accurate point, the points only it dominated join the front
    assert set(points.drop(index="b").label[pareto_front(points.drop(index="b"), "latency", "acc")]) == {
        "fast", "twin_of_fast", "slower_and_worse", "as_good_but_slower", "fastest_and_worst"}


def synergy_stage(paths, tmp_path, seeds=(0, 1, 2), **section) -> Stage:
    """The synergy stage of the committed params (smoke profile with ``seeds``), section keys replaced."""
    raw = yaml.safe_load(paths.params.read_text())
    raw["profile"] = "smoke"
    raw["profiles"]["smoke"]["seeds"] = list(seeds)
    raw["synergy"] |= section
    return Stage("synergy", params=validate_params(raw), reports_dir=str(tmp_path / "stages"),
                 models_dir=str(tmp_path / "models"), root=paths.root)


def cells(none, first, second, both):
    """Per-seed test accuracy of the four cells, shaped like Stage.reference's results."""
    return [{"seed": [0, 1, 2], "test_acc": list(v)} for v in (none, first, second, both)]


NONE = np.array([0.50, 0.54, 0.52])
NOISE = np.array([0.004, -0.003, 0.001])


@pytest.mark.parametrize("both_gain, expected", [
    (0.05 + 0.03 + np.array([0.01, -0.012, 0.003]), "add up"),   # the sum, give or take: CI holds 0
    (0.12 + NOISE, "reinforce"),                                # more than the sum, every seed
    (0.06 + NOISE, "overlap"),                                  # less than the sum, more than either
    (0.01 + NOISE, "conflict"),                                 # less than SE alone
])
def test_the_factorial_says_how_two_gains_combine(paths, tmp_path, both_gain, expected):
    stage = synergy_stage(paths, tmp_path)
    none, first, second, both = cells(NONE, NONE + 0.05 + NOISE, NONE + 0.03 - NOISE, NONE + both_gain)
    table, interaction, combined = factorial_table(stage, none, first, second, both, ("se", "randaugment"))
    assert combined == expected
    row = table.loc["interaction se x randaugment (both - se - randaugment + none)"]
    assert row.verdict == expected and row.seeds == 3
    assert row.effect == pytest.approx(np.mean(both_gain) - 0.08) == pytest.approx(interaction.mean)
    assert (row.ci_low <= 0 <= row.ci_high) == (expected == "add up")
    assert table.loc["se alone", "effect"] == pytest.approx(0.05 + NOISE.mean())
    # a main effect is the mean of the factor's two simple effects
    assert table.loc["se: main effect", "effect"] == pytest.approx(
        (table.loc["se alone", "effect"] + table.loc["se on top of randaugment", "effect"]) / 2)
    assert table.loc["se + randaugment over se alone", "effect"] == pytest.approx(np.mean(both_gain - 0.05 - NOISE))


def test_a_combination_is_additive_until_the_interaction_excludes_zero():
    best_above = Estimate(0.01, 0.005, 0.015, 3)
    assert combination(Estimate(-0.02, -0.05, 0.01, 3), best_above) == "add up"
    assert combination(Estimate(-0.02, -0.03, -0.01, 3), best_above) == "overlap"
    assert combination(Estimate(-0.02, -0.03, -0.01, 3), Estimate(-0.01, -0.02, -0.005, 3)) == "conflict"
    assert combination(Estimate(0.02, 0.01, 0.03, 3), best_above) == "reinforce"
    # one seed gives no interval: nothing is excluded
    assert combination(Estimate(-0.2, math.nan, math.nan, 1), best_above) == "add up"


@pytest.mark.parametrize("section, message", [
    ({"factorial": {"first": "se", "second": "randaugment", "both": "se_ra"}},
     "synergy: Value error, factorial.both names no variant ('se_ra')"),
    ({"steps": ["se", "ful"]}, "synergy: Value error, steps[1] names no variant ('ful')"),
    ({"compress": {"source": "fulll"}}, "synergy: Value error, compress.source names no variant ('fulll')"),
    ({"compress": {"prune": {"amount": 1.5}}}, "synergy.compress.prune.amount: Input should be less than 1"),
    ({"compress": {"finetune_epochs_scale": 0}}, "synergy.compress.finetune_epochs_scale: Input should be greater"),
    ({"control": {"stage": "dropout", "varient": "x"}}, "synergy.control.varient: Extra inputs are not permitted"),
    ({"variants": {"se": {"augment": ["randaugment", "autoaugment"]}}},
     "synergy.variants.se.augment: Value error, augment must list distinct names"),
    ({"variants": {"se": {"distill": "maybe"}}}, "synergy.variants.se.distill: Input should be a valid boolean"),
])
def test_bad_synergy_params_are_refused_with_the_key_named(paths, section, message):
    raw = yaml.safe_load(paths.params.read_text())
    for key, value in section.items():  # one variant replaced, the others kept
        raw["synergy"][key] = raw["synergy"]["variants"] | value if key == "variants" else value
    with pytest.raises(ParamsError, match=re.escape(message)) as err:
        validate_params(raw)
    assert str(err.value).count("\n") == 1  # that key alone


def write_control(stage: Stage, **info) -> None:
    """The control's metrics.json as the dropout stage writes it, under this stage's budget."""
    folder = stage.out_dir.parent / "dropout"
    folder.mkdir(parents=True, exist_ok=True)
    block = {"per_seed": {"seed": [0, 1], "test_acc": [0.61, 0.63]}, "img_size": stage.budget.img_size, **info}
    folder.joinpath("metrics.json").write_text(json.dumps({"profile": "smoke", "budget": comparable_budget(
        stage.budget), "low_data_drop_rate_0": block}))


def test_cells_must_share_the_data_regime_of_their_control(paths, tmp_path):
    stage = synergy_stage(paths, tmp_path, seeds=(0, 1))
    epochs = round(stage.budget.epochs * 5)
    write_control(stage, train_fraction=0.2, epochs=epochs)
    with pytest.raises(ParamsError, match="synergy.variants.se.train_fraction: the cell trains with train_fraction "
                                          "0.1, the control dropout/low_data_drop_rate_0 with 0.2") as err:
        check_control(stage)
    assert "synergy.variants.full.train_fraction" in str(err.value) and "epochs_scale" not in str(err.value)
    write_control(stage, train_fraction=0.1, epochs=epochs + 1)
    with pytest.raises(ParamsError, match=f"synergy.variants.randaugment.epochs_scale: the cell trains with epochs "
                                          f"{epochs}, the control dropout/low_data_drop_rate_0 with {epochs + 1}"):
        check_control(stage)
    write_control(stage, train_fraction=0.1, epochs=epochs)
    assert check_control(stage) == {"seed": [0, 1], "test_acc": [0.61, 0.63]}


def test_the_pruned_cell_is_judged_against_the_cell_fine_tuned_alike(paths, tmp_path):
    """The compressed cell's models: int8 against the cell as trained; pruned (and pruned int8)
    against the cell fine-tuned for the same epochs, on the same images, without pruning."""
    small = {"model": "resnet10t", "train_fraction": 0.5, "epochs_scale": 1}
    stage = synergy_stage(paths, tmp_path, seeds=(0,), model="resnet10t", steps=["se", "full"],
                          variants={n: small for n in ("se", "randaugment", "se_randaugment", "full")})
    stage.run_variant("full")
    compressed, controls = compress_cell(stage, teacher=None)
    assert controls == {"full_finetuned": "full", "full_int8": "full", "full_pruned50": "full_finetuned",
                        "full_pruned50_int8": "full_finetuned"}
    assert list(compressed) == list(controls)
    dense, pruned = compressed["full_finetuned"], compressed["full_pruned50"]
    for key in ("source", "finetune_epochs", "train_images"):  # the same footing, so the claims compare them
        assert dense.info[key] == pruned.info[key]
    assert dense.info["finetune_epochs"] >= 1
    assert [r.fit.epochs_completed for r in dense.runs] == [r.fit.epochs_completed for r in pruned.runs] == [
        dense.info["finetune_epochs"]]
    table = compression_table(stage, "full", controls, pd.DataFrame(
        {"latency_same_run_cpu_b1_ms": 1.0}, index=["full", *controls]))
    assert table.loc["full_pruned50", "compared_with"] == "full_finetuned"
    assert table.loc["full_pruned50", "change"] == pytest.approx(
        pruned.estimate("test_acc").mean - dense.estimate("test_acc").mean)
    assert table.loc["full", "compared_with"] == "" and table.loc["full", "change"] == 0.0
