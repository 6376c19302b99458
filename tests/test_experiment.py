"""Stage: variants from params, paired effects and claims, and the guards on its comparisons."""

import json

import pytest
import torch
import yaml

from resnet_review.config import ParamsError, validate_params
from resnet_review.experiment import Stage
from resnet_review.runs import SeedSeries
from resnet_review.stats import VERDICTS, Estimate

TINY_BUDGET = {"train_size": 120, "val_size": 40, "test_size": 80, "img_size": 28, "epochs": 1, "batch_size": 40,
               "seeds": [0, 1], "bootstrap_resamples": 0, "latency_repeats": 1, "measure_memory": False,
               "corruption_size": 40}


def tiny_params(paths, section: dict, **budget):
    raw = yaml.safe_load(paths.params.read_text())
    raw["profile"] = "smoke"
    raw["profiles"]["smoke"] = {**TINY_BUDGET, **budget}
    raw["tiny"] = section
    return validate_params(raw)


def open_stage(paths, tmp_path, section: dict, **budget) -> Stage:
    return Stage("tiny", params=tiny_params(paths, section, **budget), reports_dir=str(tmp_path / "stages"),
                 models_dir=str(tmp_path / "models"), root=paths.root)


@pytest.fixture(scope="module")
def trained(paths, module_tmp):
    """Two variants of resnet18 on 120 real images: the profile's data, and half of it at 16 px for
    twice the epochs."""
    tmp = module_tmp
    stage = open_stage(paths, tmp, {"model": "resnet18", "variants": {
        "full": {},
        "half_16px": {"train_fraction": 0.5, "img_size": 16, "epochs_scale": 2, "train": {"lr": 0.05}},
    }})
    return stage, stage.run_variants()


def test_variants_get_their_data_epochs_and_recipe(trained):
    stage, results = trained
    full, half = results["full"], results["half_16px"]
    assert full.info["architecture"] != half.info["architecture"]  # another input size: another timing
    info = {k: v for k, v in full.info.items() if k != "architecture"}
    assert info | {"model": "resnet18"} == {"model": "resnet18", "train_fraction": 1.0, "train_images": 120,
                                                   "img_size": 28, "epochs": 1, "view": "image"}
    assert half.info["train_images"] == 60 and half.info["img_size"] == 16 and half.info["epochs"] == 2
    assert [len(r.fit.history) for r in half.runs] == [2, 2]
    assert half.profile.input_shapes == [[1, 16, 16]]
    assert [r.seed for r in full.runs] == [0, 1]
    # the smaller training set is nested in the full one (same draw, cut shorter)
    small, big = stage.splits_for(0.5, 28).train.inputs[0], stage.splits.train.inputs[0]
    assert any(torch.equal(small[0], row) for row in big)


def test_only_models_trained_on_the_profiles_own_budget_are_traced_for_the_report(trained):
    from resnet_review.profiling import load_traced

    stage, results = trained
    traced = sorted((stage.models_dir / "traced").iterdir())
    # the half-data 16 px variant answers another question than the Pareto front's
    assert [p.name for p in traced] == [f"{results['full'].info['architecture']}.pt"]
    module, shapes = load_traced(traced[0])
    model, x = results["full"].model, torch.randn(2, 1, 28, 28)
    assert shapes == [(1, 28, 28)]
    with torch.no_grad():
        assert torch.allclose(module(x), model(x), atol=1e-5)


def test_metrics_json_holds_per_seed_values_and_the_budget(trained):
    stage, results = trained
    data = json.loads((stage.out_dir / "metrics.json").read_text())
    assert data["budget"]["train_size"] == 120 and data["budget"]["seeds"] == [0, 1]
    per_seed = data["full"]["per_seed"]
    assert per_seed["seed"] == [0, 1]
    assert per_seed["test_acc"] == [r.test.accuracy for r in results["full"].runs]
    # the gap is eval-mode training accuracy minus validation accuracy
    run = results["full"].runs[0]
    assert per_seed["train_val_gap"][0] == pytest.approx(run.train_eval.accuracy - run.fit.final["val_acc"])
    assert data["half_16px"]["epochs"] == 2
    # every model is also scored on the corrupted test images: per corruption and on average
    run = results["full"].runs[1]
    assert len(run.corruption) == 5 and per_seed["corruption_acc"][1] == pytest.approx(
        sum(run.corruption.values()) / 5)
    assert data["full"]["corruptions"]["occlusion@2"] == pytest.approx(
        sum(r.corruption["occlusion@2"] for r in results["full"].runs) / 2)


def test_a_stage_measures_its_claims_of_the_registry_and_logs_them(trained, tmp_path):
    stage, results = trained
    stage.claims_file = tmp_path / "claims.yaml"
    stage.claims_file.write_text(yaml.safe_dump({"claims": [
        {"id": "half_data_hurts", "section": "Table 1", "claim": "Less data lowers accuracy", "metric": "test_acc",
         "expect": "decrease", "treatment": "tiny/half_16px", "control": "tiny/full",
         "differs": ["train_images", "img_size", "epochs"]},
        {"id": "half_is_faster", "section": "Table 1", "claim": "Half-size inputs run faster",
         "stage_claim": "tiny/half_speedup"},
        {"id": "elsewhere", "section": "II.A", "claim": "Another stage's claim", "metric": "test_acc",
         "treatment": "se/seresnet50", "control": "baseline/resnet50"}]}))
    with pytest.raises(KeyError, match="no claim in claims.yaml has 'stage_claim: tiny/typo'"):
        stage.estimate("typo", Estimate(0.5, 0.2, 0.8, 5), metric="speedup - 1")
    stage.estimate("half_speedup", Estimate(0.5, 0.2, 0.8, 5), metric="speedup - 1")
    text = stage.claims_markdown()
    diffs = [h.test.accuracy - f.test.accuracy for h, f in zip(results["half_16px"].runs, results["full"].runs)]
    logged = json.loads((stage.out_dir / "metrics.json").read_text())["claims"]
    assert logged["half_data_hurts"]["effect"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert logged["half_data_hurts"]["verdict"] in VERDICTS and logged["half_data_hurts"]["profile"] == "smoke"
    assert logged["half_data_hurts"]["comparison"] == "tiny/half_16px vs tiny/full"
    assert logged["half_speedup"]["effect"]["mean"] == 0.5 and logged["half_speedup"]["unit"] == "timing rounds"
    lines = text.splitlines()
    assert lines[0].startswith("* **Less data lowers accuracy** (Table 1) — tiny/half_16px vs tiny/full, test acc: ")
    assert lines[0].endswith(f"→ **{logged['half_data_hurts']['verdict']}**.")
    assert lines[1] == ("* **Half-size inputs run faster** (Table 1) — tiny/half_speedup (the stage's estimate), "
                        "speedup - 1: **+0.5000** (95% CI +0.2000 to +0.8000, over timing rounds) → **supported**.")
    assert "Another stage's claim" not in text and lines[-1] == stage.budget_note()


def test_effects_against_zero_and_interactions_on_known_values(paths, tmp_path):
    stage = open_stage(paths, tmp_path, {"model": "resnet18"})
    clear = SeedSeries("gain", {0: 0.02, 1: 0.04, 2: 0.03})
    effect, outcome = stage.effect(clear, None)
    assert effect.mean == pytest.approx(0.03) and effect.ci_low > 0 and outcome == "supported"
    assert stage.effect(clear, None, expected_sign=-1)[1] == "not supported"
    straddles = SeedSeries("noise", {0: 0.02, 1: -0.03, 2: 0.01})
    assert stage.effect(straddles, None)[1] == "inconclusive at this budget"
    a, b, c, d = ({"seed": [0, 1], "test_acc": v} for v in ([0.9, 0.8], [0.7, 0.7], [0.5, 0.6], [0.5, 0.5]))
    inter = stage.interaction(a, b, c, d, name="more_at_a")
    assert inter.values == pytest.approx({0: 0.2, 1: 0.0})
    with pytest.raises(ValueError, match="same seeds"):
        stage.effect(clear, {"seed": [0, 1], "test_acc": [0.1, 0.2]})


def test_unknown_model_in_a_variant_is_refused_with_the_params(paths, tmp_path):
    with pytest.raises(ParamsError, match=r"tiny\.variants\.typo\.model: Value error, unknown model 'resnet5O'"):
        open_stage(paths, tmp_path, {"variants": {"typo": {"model": "resnet5O"}}})
    stage = open_stage(paths, tmp_path, {"variants": {"a": {}}})
    with pytest.raises(KeyError, match="no variant 'b'.*variants: a"):
        stage.run_variant("b")


def test_reference_refuses_a_baseline_of_another_budget(paths, tmp_path):
    stage = open_stage(paths, tmp_path, {"model": "resnet18"})
    baseline = stage.out_dir.parent / "baseline" / "metrics.json"
    baseline.parent.mkdir(parents=True)
    budget = {k: TINY_BUDGET[k] for k in ("train_size", "val_size", "test_size", "img_size", "batch_size", "seeds")}
    block = {"resnet50": {"per_seed": {"seed": [0, 1], "test_acc": [0.5, 0.6]}}}
    baseline.write_text(json.dumps({"profile": "smoke", "budget": {**budget, "data_seed": 0, "in_chans": 1,
                                                                   "epochs": 3}, **block}))
    with pytest.raises(ValueError, match="differs in epochs"):
        stage.reference()
    baseline.write_text(json.dumps({"profile": "smoke", "budget": {**budget, "data_seed": 0, "in_chans": 1,
                                                                   "epochs": 1}, **block}))
    assert stage.reference()["test_acc"] == [0.5, 0.6]


def test_a_stage_without_variants_trains_its_model_once(paths, tmp_path):
    stage = open_stage(paths, tmp_path, {"model": "resnet18"}, seeds=[0])
    results = stage.run_variants()
    assert list(results) == ["resnet18"] and len(results["resnet18"].runs) == 1


def test_variants_of_one_architecture_share_one_profile(paths, tmp_path, monkeypatch):
    import resnet_review.experiment as experiment

    calls = []
    real = experiment.profile_model
    monkeypatch.setattr(experiment, "profile_model", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    stage = open_stage(paths, tmp_path, {"model": "resnet18", "variants": {
        "plain": {}, "lower_lr": {"train": {"lr": 0.01}}, "dropout": {"model_kwargs": {"drop_rate": 0.5}},
        "silu": {"model_kwargs": {"act_layer": "silu"}}}}, seeds=[0], corruption_size=0)
    results = stage.run_variants()
    assert len(calls) == 2  # resnet18 once, its SiLU form once
    assert results["lower_lr"].profile is results["plain"].profile
    assert results["lower_lr"].info["profiled_as"] == "plain"
    assert results["dropout"].info["profiled_as"] == "plain" and "profiled_as" not in results["silu"].info
    data = json.loads((stage.out_dir / "metrics.json").read_text())
    assert data["dropout"]["gmacs"] == data["plain"]["gmacs"] and data["dropout"]["profiled_as"] == "plain"
    # one id per deployed architecture, which the report pools latencies by across stages
    ids = {name: data[name]["architecture"] for name in results}
    assert ids["plain"] == ids["lower_lr"] == ids["dropout"] != ids["silu"]


def test_finish_records_every_seeds_test_predictions_and_the_claims_count_the_test_images(trained):
    """Run last of the tests on ``trained``: it finishes the stage."""
    from resnet_review.claims import SEEDS_AND_IMAGES, ClaimSpec, measure

    stage, results = trained
    stage.finish()
    recorded = json.loads((stage.out_dir / "predictions.json").read_text())["variants"]
    assert set(recorded) == {"full", "half_16px"} and set(recorded["full"]["seeds"]) == {"0", "1"}
    for run in results["full"].runs:
        predicted, targets = recorded["full"]["seeds"][str(run.seed)], recorded["full"]["targets"]
        assert len(predicted) == len(targets) == stage.budget.test_size
        assert sum(p == t for p, t in zip(predicted, targets)) / len(targets) == pytest.approx(run.test.accuracy)
    spec = ClaimSpec(id="half", section="Table 1", claim="less data lowers accuracy", metric="test_acc",
                     expect="decrease", treatment="tiny/half_16px", control="tiny/full",
                     differs=["train_images", "img_size", "epochs"])
    row = measure([spec], stage.out_dir.parent).iloc[0]
    assert row.interval == SEEDS_AND_IMAGES
    diffs = [h.test.accuracy - f.test.accuracy for h, f in zip(results["half_16px"].runs, results["full"].runs)]
    assert row.effect == pytest.approx(sum(diffs) / 2)
    # the test images add their chance to the seeds': the interval holds the seeds-only one
    assert row.ci_low <= row.ci_seeds_low and row.ci_high >= row.ci_seeds_high
