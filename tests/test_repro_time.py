"""benchmarks/repro_time.py: stage times from rendered notebooks and metrics, against the goal; and
benchmarks/test_tiers.py with the set-up the tiers it times run under."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch


def write_stage(reports, name, start, end, duration, per_seed=None, folder="stages"):
    out = reports / folder / name if folder else reports / name
    out.mkdir(parents=True)
    meta = {"papermill": {"start_time": start, "end_time": end, "duration": duration}}
    (out / "notebook.ipynb").write_text(json.dumps({"metadata": meta, "cells": []}))
    if per_seed is not None:
        (out / "metrics.json").write_text(json.dumps({"profile": "cpu", "resnet50": {"per_seed": per_seed}}))


def test_times_add_up_and_the_goal_is_judged_on_the_whole_span(tmp_path, load_repo_module):
    bench = load_repo_module("benchmarks/repro_time.py")
    write_stage(tmp_path, "baseline", "2026-01-01T10:00:00+00:00", "2026-01-01T10:02:00+00:00", 120.0,
                {"train_time_s": [30.0, 31.0, None], "train_images_per_s": [130.0, 140.0, 150.0]})
    write_stage(tmp_path, "se", "2026-01-01T10:02:30+00:00", "2026-01-01T10:04:30+00:00", 120.0,
                {"train_time_s": [40.0, 40.0, 40.0], "train_images_per_s": [100.0, 100.0, 100.0]})
    write_stage(tmp_path, "report", "2026-01-01T10:05:00+00:00", "2026-01-01T10:05:10+00:00", 10.0, folder=None)
    result = bench.summarise(tmp_path, goal_min=5)
    assert [r["stage"] for r in result["stages"]] == ["baseline", "se", "report"]  # in the order they ran
    assert result["stages"][0]["training_s"] == 61.0 and result["stages"][0]["other_s"] == 59.0
    assert result["training_s"] == 181.0 and result["stages_wall_s"] == 250.0
    assert result["span_s"] == 310.0 and result["between_stages_s"] == 60.0
    assert result["baseline_train_images_per_s"] == 140.0  # the machine's speed: the baseline's median
    assert result["meets_goal"] is False  # 5 min 10 s against 5 min
    assert bench.summarise(tmp_path, goal_min=5.2)["meets_goal"] is True
    assert result["models_gib"] is None  # no weights folder given


def test_the_weights_kept_count_a_hard_linked_file_once(tmp_path, load_repo_module):
    bench = load_repo_module("benchmarks/repro_time.py")
    models = tmp_path / "models"
    (models / "baseline" / "resnet50").mkdir(parents=True)
    weights = models / "baseline" / "resnet50" / "seed0.pt"
    with weights.open("wb") as fh:
        fh.truncate(3 * 2**29)  # 1.5 GiB by its size, a sparse file on disk
    os.link(weights, models / "baseline" / "resnet50" / "seed0.cached.pt")  # as DVC's hardlink cache does
    (models / "se").mkdir()
    with (models / "se" / "seed0.pt").open("wb") as fh:
        fh.truncate(2**29)
    assert bench.folder_gib(models) == 2.0
    assert bench.folder_gib(tmp_path / "nowhere") is None


def test_a_notebook_not_rendered_by_the_pipeline_is_named(tmp_path, capsys, load_repo_module):
    bench = load_repo_module("benchmarks/repro_time.py")
    (tmp_path / "stages" / "se").mkdir(parents=True)
    (tmp_path / "stages" / "se" / "notebook.ipynb").write_text(json.dumps({"metadata": {}, "cells": []}))
    with pytest.raises(SystemExit):
        bench.main(["--reports", str(tmp_path), "--out", str(tmp_path / "out.json")])
    assert "se/notebook.ipynb has no papermill start/end time" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
    with pytest.raises(SystemExit):
        bench.main(["--reports", str(tmp_path / "nowhere")])
    assert "run `dvc repro` first" in capsys.readouterr().err


def test_the_tier_benchmark_records_where_a_tiers_time_goes(load_repo_module):
    tiers = load_repo_module("benchmarks/test_tiers.py")
    output = """
============================= slowest 25 durations =============================
612.41s setup    tests/test_pipeline.py::test_repro_writes_real_metrics
31.20s call     tests/test_scaling.py::test_dvc_queue_runs_two_smoke_experiments_in_two_workers_at_once
0.52s teardown tests/test_reliability.py::test_bad_params_under_dvc_repro_are_refused[unknown_model]
330 passed, 15 warnings in 1402.85s (0:23:22)
"""
    assert tiers.slowest(output) == [
        {"seconds": 612.41, "phase": "setup", "test": "tests/test_pipeline.py::test_repro_writes_real_metrics"},
        {"seconds": 31.2, "phase": "call",
         "test": "tests/test_scaling.py::test_dvc_queue_runs_two_smoke_experiments_in_two_workers_at_once"},
        {"seconds": 0.52, "phase": "teardown",
         "test": "tests/test_reliability.py::test_bad_params_under_dvc_repro_are_refused[unknown_model]"}]
    assert re.search(r"(^| )-n [1-9]", tiers.addopts()), "the suite runs in pytest-xdist workers"


def test_a_worker_and_what_it_starts_use_their_share_of_the_cores():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not workers:
        pytest.skip("run without pytest-xdist workers (-n 0): torch keeps its default threads")
    share = max(1, len(os.sched_getaffinity(0)) // workers)
    assert torch.get_num_threads() == share
    probe = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    started = subprocess.run(probe, capture_output=True, text=True, check=True, env=os.environ)
    assert int(started.stdout) == share
