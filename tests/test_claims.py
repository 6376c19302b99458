"""The claims table: the catalogue validates, and the report's verdicts follow from known inputs."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from resnet_review.claims import NOT_MEASURED, ClaimSpec, load_catalogue, measure
from resnet_review.config import load_params


def write_stage(folder, stage, profile="cpu", claims=None, **variants):
    """A stage's metrics.json holding per-seed test accuracy / gap of each variant (known inputs)."""
    data = {"profile": profile, "claims": claims or {}}
    for name, (acc, gap) in variants.items():
        data[name] = {"per_seed": {"seed": list(range(len(acc))), "test_acc": acc, "train_val_gap": gap,
                                   "train_acc": [min(1.0, a + 0.25) for a in acc]}}  # fits when acc >= 0.65
    (folder / stage).mkdir(parents=True, exist_ok=True)
    (folder / stage / "metrics.json").write_text(json.dumps(data))


def spec(**kw) -> ClaimSpec:
    return ClaimSpec(**{"id": "c", "section": "II.A", "claim": "x improves y", **kw})


@pytest.fixture
def stages(tmp_path):
    write_stage(tmp_path, "baseline", resnet50=([0.70, 0.72, 0.71], [0.05, 0.06, 0.04]))
    write_stage(tmp_path, "tech", better=([0.75, 0.78, 0.76], [0.05, 0.04, 0.05]),  # +0.053 every seed
                noisy=([0.75, 0.68, 0.74], [0.05, 0.06, 0.04]),                     # +0.047, -0.04, +0.03
                worse=([0.60, 0.63, 0.61], [0.01, 0.02, 0.01]))
    write_stage(tmp_path, "gpu_stage", profile="gpu", resnet50=([0.9, 0.9, 0.9], [0.0, 0.0, 0.0]))
    write_stage(tmp_path, "speed", claims={"faster": {"effect": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 5,
                                                                 "confidence": 0.95},
                                                      "verdict": "supported", "profile": "cpu"}})
    return tmp_path


def test_verdicts_follow_the_confidence_interval(stages):
    base = {"metric": "test_acc", "control": "baseline/resnet50"}
    table = measure([spec(id="clear", treatment="tech/better", **base),
                     spec(id="straddles", treatment="tech/noisy", **base),
                     spec(id="opposite", treatment="tech/worse", **base),
                     spec(id="gap_down", treatment="tech/worse", metric="train_val_gap", expect="decrease",
                          control="baseline/resnet50"),
                     spec(id="no_loss", treatment="tech/noisy", expect="no_loss", margin=0.2, **base)],
                    stages).set_index("id")
    clear = table.loc["clear"]
    assert clear.verdict == "supported" and clear.effect == pytest.approx(0.16 / 3) and clear.ci_low > 0
    assert clear.seeds == 3 and clear.profile == "cpu" and clear.comparison == "tech/better vs baseline/resnet50"
    assert table.loc["straddles"].verdict == "inconclusive at this budget"
    assert table.loc["straddles"].ci_low < 0 < table.loc["straddles"].ci_high
    assert table.loc["opposite"].verdict == "not supported"
    assert table.loc["gap_down"].verdict == "supported"  # a claimed decrease that happened
    assert table.loc["no_loss"].verdict == "supported"   # the CI lies above -0.2


def test_what_cannot_be_measured_is_listed_with_the_reason(stages):
    base = {"metric": "test_acc", "control": "baseline/resnet50"}
    table = measure([spec(id="no_stage", treatment="limitations/x", **base),
                     spec(id="no_variant", treatment="tech/gpu_only", **base),
                     spec(id="profiles", treatment="gpu_stage/resnet50", **base),
                     spec(id="stage_estimate", stage_claim="speed/faster"),
                     spec(id="no_estimate", stage_claim="speed/smaller")], stages).set_index("id")
    assert table.loc["no_stage"].verdict == NOT_MEASURED
    assert "stage 'limitations' has not run" in table.loc["no_stage"].note
    assert "'tech/gpu_only' did not run under profile 'cpu'" in table.loc["no_variant"].note
    assert table.loc["profiles"].verdict == NOT_MEASURED and "under 'gpu'" in table.loc["profiles"].note
    assert table.loc["stage_estimate"].verdict == "supported" and table.loc["stage_estimate"].effect == 0.5
    assert table.loc["no_estimate"].verdict == NOT_MEASURED and math.isnan(table.loc["no_estimate"].effect)


def test_a_bad_catalogue_names_each_bad_entry(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [
        {"id": "a", "section": "II.A", "claim": "x", "metric": "test_acc", "treatment": "se", "control": "b/c"},
        {"id": "b", "section": "II.A", "claim": "x", "stage_claim": "s/k", "metric": "test_acc"},
        {"id": "c", "section": "II.A", "claim": "x", "metric": "test_acc", "treatment": "a/b", "control": "b/c",
         "expect": "no_loss"},
        {"id": "d", "section": "II.A", "claim": "x", "stage_claim": "s/k"},
        {"id": "d", "section": "II.A", "claim": "x", "stage_claim": "s/k"}]}))
    with pytest.raises(ValueError) as err:
        load_catalogue(path)
    message = str(err.value)
    assert "a.treatment: Value error, must be 'stage/name', got 'se'" in message
    assert "b.(entry): Value error, stage_claim takes the stage's own estimate" in message
    assert "c.(entry): Value error, expect: no_loss needs the margin" in message
    assert "d: duplicate id" in message


def test_the_committed_catalogue_names_stages_of_the_pipeline(paths):
    catalogue = load_catalogue(paths.root / "claims.yaml")
    stages = set(load_params(paths.params).stage_names()) | {"limitations", "synergy"}
    named = {ref.split("/")[0] for c in catalogue for ref in (c.treatment, c.control, c.stage_claim) if ref}
    assert named <= stages, sorted(named - stages)
    assert len(catalogue) >= 40 and len({c.section for c in catalogue}) >= 10


def test_every_claim_is_measured_by_its_stage_after_its_control_ran(paths):
    """A stage's notebook measures its claims (treatment or estimate its own) on the results at
    hand: a control of another stage must be a DVC dependency of it, directly or through others,
    or the notebook could read a stale control."""
    deps = {}
    for name, spec in yaml.safe_load((paths.root / "dvc.yaml").read_text())["stages"].items():
        for key in spec.get("foreach") or [name]:  # a foreach block's stages are its keys
            body = spec.get("do", spec)
            deps[key] = {d.split("/")[2] for d in body.get("deps", []) if d.startswith("reports/stages/")}

    def upstream(name: str) -> set[str]:
        return {name}.union(*(upstream(dep) for dep in deps.get(name, ())))

    unordered = [(c.id, c.control) for c in load_catalogue(paths.root / "claims.yaml")
                 if c.control and c.control.split("/")[0] not in upstream(c.stage)]
    assert unordered == []


def test_tiers_bh_and_the_strongest_evidence_per_claim(tmp_path, paths):
    from resnet_review.claims import TIERS, evidence_tier, measure_sources, strongest

    written = load_params(paths.params).budgets_written()
    gpu = written["gpu"]
    assert evidence_tier("cpu", written["cpu"], written) == "exploratory (cpu)"
    assert evidence_tier("gpu", gpu, written) == TIERS[-1]
    assert evidence_tier("gpu", {**gpu, "epochs": gpu["epochs"] - 1}, written) == "full-data short schedule (gpu)"
    assert evidence_tier("gpu", {**gpu, "train_size": 100}, written) == "gpu, another budget"
    assert evidence_tier("smoke", None, written).startswith("smoke")

    cpu_dir, gpu_dir = tmp_path / "cpu", tmp_path / "gpu"
    for folder, profile, budget, lift in ((cpu_dir, "cpu", written["cpu"], 0.0), (gpu_dir, "gpu", gpu, 0.05)):
        write_stage(folder, "baseline", profile, resnet50=([0.70, 0.72, 0.71], [0, 0, 0]))
        write_stage(folder, "tech", profile, better=([0.71 + lift, 0.73 + lift, 0.715 + lift], [0, 0, 0]),
                    noisy=([0.75, 0.68, 0.74], [0, 0, 0]))
        for stage in ("baseline", "tech"):
            data = json.loads((folder / stage / "metrics.json").read_text())
            (folder / stage / "metrics.json").write_text(json.dumps({**data, "budget": budget}))
    base = {"metric": "test_acc", "control": "baseline/resnet50"}
    catalogue = [spec(id="lifted", treatment="tech/better", **base), spec(id="noisy", treatment="tech/noisy", **base),
                 spec(id="absent", treatment="tech/nowhere", **base,
                      literature={"effect": "+1.49 top-1", "source": "torchvision"})]
    measured = measure_sources(catalogue, [cpu_dir, gpu_dir, tmp_path / "empty"], written)
    assert sorted(set(measured["source"])) == [str(cpu_dir), str(gpu_dir)]  # a folder without results is skipped
    # within one run's family, BH adjusts every measured p; the unmeasured claim is not counted
    cpu = measured[measured["source"] == str(cpu_dir)].set_index("id")
    (p_small, small), (p_large, large) = sorted(zip(cpu["p_value"].iloc[:2], cpu.index[:2]))
    assert cpu.loc[small, "q_value"] == pytest.approx(min(2 * p_small, p_large))
    assert cpu.loc[large, "q_value"] == pytest.approx(p_large)
    assert math.isnan(cpu.loc["absent", "q_value"]) and cpu.loc["absent", "verdict_bh"] == NOT_MEASURED
    best = strongest(measured).set_index("id")
    assert best.loc["lifted", "tier"] == TIERS[-1] and best.loc["lifted", "effect"] == pytest.approx(0.05 + 0.025 / 3)
    assert best.loc["lifted", "other_evidence"].startswith("exploratory (cpu): +0.0083 [")
    assert best.loc["absent", "verdict"] == NOT_MEASURED
    assert best.loc["absent", "literature"] == "+1.49 top-1 (torchvision)"
    assert list(best.index) == ["lifted", "noisy", "absent"]  # catalogue order


def test_a_control_on_another_footing_is_refused_unless_the_claim_tests_that(tmp_path):
    from resnet_review.claims import UNEQUAL, Results, footing

    budget = {"train_size": 2000, "img_size": 24, "epochs": 2}
    write_stage(tmp_path, "baseline", resnet50=([0.70, 0.72, 0.71], [0, 0, 0]))
    write_stage(tmp_path, "tech", small=([0.60, 0.61, 0.62], [0, 0, 0]), tuned=([0.71, 0.73, 0.72], [0, 0, 0]),
                dense=([0.70, 0.72, 0.715], [0, 0, 0]))
    for stage, extra in (("baseline", {}), ("tech", {"small": {"img_size": 8},
                                                     "tuned": {"source": "baseline/resnet50", "qat_epochs": 1},
                                                     "dense": {"source": "baseline/resnet50", "finetune_epochs": 1}})):
        data = json.loads((tmp_path / stage / "metrics.json").read_text())
        for variant, info in extra.items():
            data[variant] |= info
        (tmp_path / stage / "metrics.json").write_text(json.dumps({**data, "budget": budget}))
    assert footing(Results(tmp_path), "tech/tuned") == {"train_images": 2000, "img_size": 24, "epochs": 2,
                                                          "extra_epochs": 1, "teacher": None}
    base = {"metric": "test_acc", "control": "baseline/resnet50"}
    table = measure([spec(id="mismatched", treatment="tech/small", expect="decrease", **base),
                     spec(id="declared", treatment="tech/small", expect="decrease", differs=["img_size"], **base),
                     spec(id="extra_epoch", treatment="tech/tuned", **base),
                     spec(id="fine_tuned_control", treatment="tech/tuned", metric="test_acc", control="tech/dense")],
                    tmp_path).set_index("id")
    assert table.loc["mismatched", "verdict"] == UNEQUAL and "img_size 8 vs 24" in table.loc["mismatched", "note"]
    assert math.isnan(table.loc["mismatched", "p_value"]) and math.isnan(table.loc["mismatched", "q_value"])
    assert table.loc["declared", "verdict"] == "supported"  # the resolution is what the claim tests
    assert table.loc["extra_epoch", "verdict"] == UNEQUAL and "extra_epochs 1 vs 0" in table.loc["extra_epoch", "note"]
    assert table.loc["fine_tuned_control", "verdict"] != UNEQUAL  # one extra epoch on each side


def test_an_overfitting_claim_whose_model_does_not_fit_is_not_testable(tmp_path):
    from resnet_review.claims import FIT_THRESHOLD, NOT_TESTABLE

    write_stage(tmp_path, "baseline", resnet50=([0.70, 0.72, 0.71], [0.05, 0.06, 0.04]))   # train acc ~0.96
    write_stage(tmp_path, "low", none=([0.30, 0.32, 0.31], [0.10, 0.12, 0.11]),            # train acc ~0.56
                dropout=([0.30, 0.31, 0.30], [0.02, 0.03, 0.01]))
    gap = {"metric": "train_val_gap", "expect": "decrease"}
    table = measure([spec(id="low_control", treatment="low/dropout", control="low/none", **gap),
                     spec(id="fitting_control", treatment="low/dropout", control="baseline/resnet50", **gap)],
                    tmp_path).set_index("id")
    row = table.loc["low_control"]
    assert row.verdict == NOT_TESTABLE and f"< {FIT_THRESHOLD}" in row.note and "low/none" in row.note
    assert math.isnan(row.p_value)
    assert table.loc["fitting_control"].verdict == "supported"
