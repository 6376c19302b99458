"""The gpu campaign on CPU: stage order, chunks that skip what is done, a deadline that cuts a stage
and a re-run that finishes it with the same numbers, seeds side by side, and the planner."""

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from resnet_review import campaign
from resnet_review.campaign import CampaignState, StageSpec, run_chunk
from resnet_review.config import load_params, validate_params
from resnet_review.engine import ChunkDeadline
from resnet_review.experiment import DEADLINE_ENV, Stage

ROOT = Path(__file__).resolve().parents[1]
TINY = {"train_size": 120, "val_size": 40, "test_size": 80, "img_size": 28, "epochs": 2, "batch_size": 40,
        "seeds": [0, 1], "bootstrap_resamples": 0, "latency_repeats": 1, "measure_memory": False,
        "corruption_size": 40}


def tiny_stage(paths, out: Path, **budget) -> Stage:
    raw = yaml.safe_load(paths.params.read_text())
    raw["profile"] = "smoke"
    raw["profiles"]["smoke"] = {**TINY, **budget}
    raw["tiny"] = {"model": "resnet18", "model_kwargs": {"drop_rate": 0.2}, "variants": {"a": {}}}
    return Stage("tiny", params=validate_params(raw), reports_dir=str(out / "stages"), models_dir=str(out / "models"),
                 root=paths.root)


def per_seed(stage: Stage, variant: str = "a") -> dict:
    block = json.loads((stage.out_dir / "metrics.json").read_text())[variant]["per_seed"]
    return {k: block[k] for k in ("seed", "test_acc", "test_loss", "val_acc")}


def test_stages_follow_what_they_read_core_claims_first_and_the_report_last():
    order = [s.name for s in campaign.campaign_order(campaign.pipeline_stages(ROOT))]
    assert order[0] == "data_overview" and order[-1] == "report"
    assert order.index("baseline") < order.index("se") < order.index("synergy")
    assert order.index("dropout") < order.index("hff")  # hff reads dropout's low-data control
    assert order.index("teacher") < order.index("distillation")
    assert order.index("wide_deep") < order.index("distillation")
    assert order.index("pruning") < order.index("quantisation") < order.index("hparam_tuning")
    needs = {s.name: s.needs for s in campaign.pipeline_stages(ROOT)}
    assert needs["quantisation"] >= {"baseline", "pruning"}


def test_a_dependency_cycle_is_named():
    with pytest.raises(ValueError, match="cycle"):
        campaign.campaign_order([StageSpec("a", "a.ipynb", frozenset({"b"})),
                                 StageSpec("b", "b.ipynb", frozenset({"a"}))])


def test_chunks_skip_what_is_done_wait_for_what_they_read_and_stop_starting_at_the_deadline(tmp_path):
    stages = [StageSpec("base", "n"), StageSpec("left", "n", frozenset({"base"})),
              StageSpec("right", "n", frozenset({"base"})), StageSpec("after", "n", frozenset({"left"})),
              StageSpec("report", "n")]
    prints = {s.name: "v1" for s in stages}
    calls, outcome = [], {"left": "partial"}

    def runner(stage, deadline):
        calls.append(stage.name)
        time.sleep(0.05)
        return outcome.get(stage.name, "done")

    state = CampaignState(tmp_path / "campaign.json")
    status = run_chunk(stages, prints, state, max_minutes=1, runner=runner, jobs=2,
                       before_report=lambda: calls.append("progress"))
    assert calls[-2:] == ["progress", "report"]  # what is missing is written before the report renders
    calls.remove("progress")
    assert calls[0] == "base" and set(calls[1:3]) == {"left", "right"} and calls[-1] == "report"
    assert "after" not in calls and status["after"] == "pending"  # waits for the partial stage it reads
    assert status["left"] == "partial" and status["right"] == "done"
    # the next chunk: done stages are skipped, the partial one continues, then its dependent runs
    calls.clear()
    outcome.clear()
    again = run_chunk(stages, prints, CampaignState(tmp_path / "campaign.json"), max_minutes=1, runner=runner)
    assert calls == ["left", "after", "report"] and again["after"] == "done"
    assert json.loads((tmp_path / "campaign.json").read_text())["stages"]["left"]["chunks_s"][0] > 0
    # other params: the stage runs again
    calls.clear()
    run_chunk(stages, {**prints, "right": "v2"}, CampaignState(tmp_path / "campaign.json"), max_minutes=1,
              runner=runner, report=False)
    assert calls == ["right"]
    # a chunk whose time is up starts nothing
    calls.clear()
    run_chunk(stages, {**prints, "right": "v3"}, CampaignState(tmp_path / "campaign.json"), max_minutes=1e-9,
              runner=runner, report=False)
    assert calls == []


@pytest.mark.slow
def test_seeds_side_by_side_give_the_numbers_of_seeds_one_after_another(paths, tmp_path):

    def seed_hooks(seed):  # draws from the global generator, as loading a seed's teacher does
        torch.randn(3)
        return {}

    one = tiny_stage(paths, tmp_path / "one")
    one.run_variants(seed_hooks=seed_hooks)
    both = tiny_stage(paths, tmp_path / "both", concurrent_seeds=2)
    both.run_variants(seed_hooks=seed_hooks)
    assert per_seed(both) == per_seed(one)
    assert per_seed(one)["test_loss"][0] != per_seed(one)["test_loss"][1]


@pytest.mark.slow
def test_a_deadline_cuts_a_stage_and_the_rerun_finishes_it_with_the_same_numbers(paths, tmp_path, monkeypatch):
    whole = tiny_stage(paths, tmp_path / "whole")
    whole.run_variants()

    monkeypatch.setenv(DEADLINE_ENV, str(time.time() + 3600))
    cut = tiny_stage(paths, tmp_path / "cut")
    assert cut.resumable  # a deadline keeps every finished run's last checkpoint
    cut.splits_for()  # data loaded before the clock starts
    cut.deadline = time.time() + 2.0  # inside the second epoch's expected time (the first one's + 3 s)
    with pytest.raises(ChunkDeadline, match="seed0 stopped after epoch 1/2"):
        cut.run_variants(on_epoch_end=lambda epoch, metrics: time.sleep(3.0))
    monkeypatch.delenv(DEADLINE_ENV)
    rerun = tiny_stage(paths, tmp_path / "cut", checkpoint_last=True)
    rerun.run_variants()
    assert per_seed(rerun) == per_seed(whole)
    assert json.loads((rerun.out_dir / "metrics.json").read_text())["a"]["per_seed"]["seed"] == [0, 1]


def test_a_bad_deadline_is_named(paths, tmp_path, monkeypatch):
    monkeypatch.setenv(DEADLINE_ENV, "soon")
    with pytest.raises(ValueError, match=r"RESNET_REVIEW_DEADLINE must be a Unix time"):
        tiny_stage(paths, tmp_path)


def test_the_lr_scaling_rules():
    budget = load_params(ROOT / "params.yaml", profile="gpu").budget
    recipe = load_params(ROOT / "params.yaml", profile="gpu").train
    assert budget.scaled_recipe(recipe, 1024).lr == pytest.approx(recipe.lr * 2)  # sqrt(1024 / 256)
    linear = budget.model_copy(update={"lr_scaling": "linear"})
    assert linear.scaled_recipe(recipe, 512).lr == pytest.approx(recipe.lr * 2)
    assert budget.model_copy(update={"lr_scaling": "none"}).scaled_recipe(recipe, 4096) is recipe


@pytest.mark.slow
def test_the_gpu_pipeline_plans_within_an_hour_at_the_measured_throughput():
    params = load_params(ROOT / "params.yaml", profile="gpu")
    stages = campaign.campaign_order(campaign.pipeline_stages(ROOT))
    throughput = campaign.measured_throughput(ROOT)
    plan = campaign.plan_pipeline(params, stages, throughput)
    assert plan.minutes <= 60, campaign.plan_markdown(plan, params.budget)
    by_stage = {s.stage: s for s in plan.stages}
    b = params.budget
    # the baseline: seeds x epochs x images, each at ResNet50's MACs at 32 px over 64 px (~1/4)
    ratio = by_stage["baseline"].train_units / (len(b.seeds) * b.epochs * b.train_size)
    assert 0.2 < ratio < 0.3
    assert by_stage["data_overview"].train_units == 0 and by_stage["report"].runs == []
    # a distilled student also pays its teacher's forward passes
    student = next(r for r in by_stage["distillation"].runs if r.variant == "resnet50_kd")
    assert student.teacher_from == "teacher"
    assert by_stage["distillation"].train_units > by_stage["baseline"].train_units
    # the profile as it was (30 epochs x 5 seeds at 64 px) is ten times over
    old = params.budget.model_copy(update={"epochs": 30, "seeds": [0, 1, 2, 3, 4], "img_size": 64})
    heavy = campaign.plan_pipeline(params.model_copy(update={"profiles": {**params.profiles, "gpu": old}}),
                                   stages, throughput)
    assert heavy.minutes > 10 * 60


@pytest.mark.slow
def test_the_pipeline_runner_stops_at_the_deadline_and_the_next_chunk_finishes(tmp_path):
    runner = campaign.pipeline_runner(ROOT, "smoke", reports=tmp_path / "gpu", models=tmp_path / "models")
    baseline = next(s for s in campaign.pipeline_stages(ROOT) if s.name == "baseline")
    assert runner(baseline, time.time() - 1) == "partial"  # no epoch may start
    assert (tmp_path / "gpu/stages/baseline/notebook.html").is_file()  # the notebook as far as it ran
    assert runner(baseline, time.time() + 600) == "done"
    metrics = json.loads((tmp_path / "gpu/stages/baseline/metrics.json").read_text())
    assert metrics["resnet50"]["per_seed"]["seed"] == [0, 1]


def test_the_throughput_benchmark_runs_and_a_cpu_figure_is_not_planned_with(load_repo_module, tmp_path, monkeypatch):
    bench = load_repo_module("benchmarks/gpu_throughput.py")
    out = tmp_path / "reports/gpu/benchmarks/throughput.json"
    assert bench.main(["--tiny", "--device", "cpu", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["settings"]) == {"profile", "imagenet"} and data["group"] == 2
    for setting in data["settings"].values():
        assert setting["bare_images_per_s"] > 0 and setting["engine_images_per_s"] > 0
    # the planner takes only a CUDA measurement; without one it falls back to the gpu baseline's rate
    (tmp_path / "reports/gpu/stages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no measured GPU throughput"):
        campaign.measured_throughput(tmp_path)
    out.write_text(json.dumps({**data, "device_type": "cuda", "engine_images_per_s": 50_000.0, "img_size": 32}))
    assert campaign.measured_throughput(tmp_path).images_per_s == 50_000.0


def test_a_stage_done_elsewhere_runs_again_when_a_pending_stage_loads_its_absent_weights(tmp_path):
    stages = [StageSpec("baseline", "n"), StageSpec("se", "n", frozenset({"baseline"})),
              StageSpec("pruning", "n", frozenset({"baseline"}), frozenset({"baseline"}))]
    prints = {s.name: "v1" for s in stages}
    state = CampaignState(tmp_path / "campaign.json")
    for name in ("baseline", "se"):
        state.record(name, "done", "v1", 1.0)
    calls = []
    run_chunk(stages, prints, state, max_minutes=1, runner=lambda s, d: calls.append(s.name) or "done",
              models_dir=tmp_path / "models")
    assert calls == ["baseline", "pruning"]  # se reads only metrics: not retrained
    (tmp_path / "models/baseline/resnet50").mkdir(parents=True)
    (tmp_path / "models/baseline/resnet50/seed0.pt").write_bytes(b"")
    state.record("pruning", "failed", "v1", 1.0)
    calls.clear()
    run_chunk(stages, prints, state, max_minutes=1, runner=lambda s, d: calls.append(s.name) or "done",
              models_dir=tmp_path / "models")
    assert calls == ["pruning"]  # the weights are here now
    spec = {s.name: s for s in campaign.pipeline_stages(ROOT)}
    assert spec["quantisation"].weights_from == {"baseline", "pruning"} and spec["se"].weights_from == set()


def test_the_profile_batch_gets_the_scaled_lr_and_a_given_batch_keeps_its_recipe(paths, tmp_path):
    stage = tiny_stage(paths, tmp_path, lr_scaling="linear", lr_reference_batch=20, seeds=[0], epochs=1)
    scaled = stage.run_variant("a")  # batch 40: twice the reference
    assert scaled.info["lr_scaled"] == pytest.approx(2 * stage.recipe.lr)
    kept = stage.run("given", batch_size=40)
    assert "lr_scaled" not in kept.info


def test_completeness_lists_the_variants_without_every_seed(tmp_path):
    params = load_params(ROOT / "params.yaml", profile="smoke")
    stages = [s for s in campaign.pipeline_stages(ROOT) if s.name in ("baseline", "swish")]
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline/metrics.json").write_text(json.dumps({"resnet50": {"seeds": 2}}))
    (tmp_path / "swish").mkdir()
    (tmp_path / "swish/metrics.json").write_text(json.dumps({"silu": {"seeds": 1}}))  # cut after one seed
    state = CampaignState(tmp_path / "campaign.json")
    state.record("baseline", "done", "x", 1.0)
    state.record("swish", "partial", "x", 1.0)
    table = campaign.completeness(params, stages, tmp_path, state)
    assert "| baseline | done | 1 | - |" in table
    assert "| swish | partial | 0 | silu |" in table


@pytest.mark.slow
def test_the_convergence_benchmark_trains_one_whole_schedule_per_epoch_count(load_repo_module, tmp_path):
    bench = load_repo_module("benchmarks/convergence.py")
    assert bench.main(["--profile", "smoke", "--epochs", "2", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "convergence.json").read_text())
    assert [p["epochs"] for p in data["points"]] == [1, 2]
    assert all(0 <= p["test_acc"] <= 1 and len(p["test_acc_per_seed"]) == 1 for p in data["points"])
    assert data["points"][1]["train_time_s"][0] > data["points"][0]["train_time_s"][0]  # twice the epochs
    assert (tmp_path / "convergence.png").stat().st_size > 0
