"""A stage run again loads the runs it trained before instead of training them, unless what trains
them changed: model, recipe, data, starting weights, a teacher's weights or the training code."""

import json
import shutil

import pytest
import torch
from test_experiment import open_stage

from resnet_review import experiment
from resnet_review.trained import PACKAGE, PRESENTATION, training_code_digest


def no_training(*args, **kwargs):
    raise AssertionError("trained a model that was trained before with the same configuration and code")


def same_numbers(a, b):
    return ([r.test.accuracy for r in a.runs], [r.fit.history for r in a.runs], a.summary()["per_seed"]) == \
        ([r.test.accuracy for r in b.runs], [r.fit.history for r in b.runs], b.summary()["per_seed"])


@pytest.fixture(scope="module")
def first(paths, module_tmp):
    tmp = module_tmp
    section = {"model": "resnet18", "variants": {"a": {}}}
    stage = open_stage(paths, tmp, section)
    return tmp, section, stage.run_variant("a")


def test_a_stage_run_again_loads_its_runs_and_gives_the_same_numbers(paths, first, monkeypatch):
    tmp, section, result = first
    record = json.loads((tmp / "models/tiny/a/seed0.run.json").read_text())
    assert record["fit"]["history"] == result.runs[0].fit.history and len(record["key"]) == 16
    monkeypatch.setattr(experiment, "fit_group", no_training)
    again = open_stage(paths, tmp, section).run_variant("a")
    assert same_numbers(again, result)
    assert [r.fit.train_time_s for r in again.runs] == [r.fit.train_time_s for r in result.runs]  # as measured
    plots = tmp / "stages/tiny/plots/metrics/a/seed1/val_acc.tsv"  # the training curves, logged again
    assert plots.is_file() and len(plots.read_text().splitlines()) == 1 + len(result.runs[1].fit.history)


def test_a_variant_over_seeds_writes_its_mean_inside_its_interval(first):
    _, _, result = first
    block = result.summary()
    accs = [r.test.accuracy for r in result.runs]
    assert block["seeds"] == len(accs) == 2 and block["per_seed"]["test_acc"] == accs
    acc = block["test_acc"]
    assert acc["mean"] == pytest.approx(sum(accs) / 2)
    assert acc["ci_low"] <= acc["mean"] <= acc["ci_high"]
    assert acc["ci_high"] - acc["ci_low"] > 0 or accs[0] == accs[1]


@pytest.mark.parametrize("change", [
    {"variants": {"a": {"train": {"lr": 0.2}}}},  # another recipe
    {"variants": {"a": {"model_kwargs": {"drop_rate": 0.2}}}},  # another model
    {"variants": {"a": {"train_fraction": 0.5}}},  # other data
])
def test_another_configuration_trains_again(paths, first, monkeypatch, change):
    tmp, section, _ = first
    monkeypatch.setattr(experiment, "fit_group", no_training)
    with pytest.raises(AssertionError, match="trained a model that was trained before"):
        open_stage(paths, tmp, {**section, **change}).run_variant("a")


def test_other_starting_weights_or_code_train_again(paths, first, monkeypatch):
    tmp, section, _ = first
    stage = open_stage(paths, tmp, section)
    factory = stage.model_factory()

    def perturbed(seed: int):  # a model built from other trained weights (e.g. a retrained baseline)
        model = factory()
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return model

    monkeypatch.setattr(experiment, "fit_group", no_training)
    with pytest.raises(AssertionError, match="trained a model"):
        stage.run("a", perturbed)
    monkeypatch.setattr(experiment.TrainedRuns, "key", lambda self, *a: "another-code-digest")
    with pytest.raises(AssertionError, match="trained a model"):
        open_stage(paths, tmp, section).run_variant("a")


def test_an_unreadable_record_or_weights_file_means_training_again(paths, first, monkeypatch):
    tmp, section, _ = first
    runs = experiment.TrainedRuns(tmp / "models/tiny", experiment.Accel.for_device("cpu"), "tiny")
    model = open_stage(paths, tmp, section).model_factory()()
    key = json.loads((tmp / "models/tiny/a/seed1.run.json").read_text())["key"]
    assert runs.load("a", 1, model, key, finalized=False) is not None
    assert runs.load("a", 1, model, "other", finalized=False) is None
    assert runs.load("a", 1, model, key, finalized=True) is None  # no trained form of a finalised model
    shutil.copy(tmp / "models/tiny/a/seed1.pt", tmp / "seed1.pt")
    (tmp / "models/tiny/a/seed1.pt").write_bytes(b"truncated")
    try:
        assert runs.load("a", 1, model, key, finalized=False) is None
    finally:
        shutil.move(tmp / "seed1.pt", tmp / "models/tiny/a/seed1.pt")


def test_the_code_digest_ignores_presentation_modules_only(tmp_path):
    package = tmp_path / "resnet_review"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = training_code_digest(package)
    assert before == training_code_digest.__wrapped__(PACKAGE)
    assert "plots.py" in PRESENTATION and "report.py" in PRESENTATION
    with (package / "plots.py").open("a") as plots:
        plots.write("\n# a plotting change\n")
    assert training_code_digest.__wrapped__(package) == before
    with (package / "engine.py").open("a") as engine:
        engine.write("\n# a training change\n")
    assert training_code_digest.__wrapped__(package) != before


def test_a_run_without_training_keeps_no_record(paths, first):
    tmp, section, _ = first
    result = open_stage(paths, tmp, section).run("untrained", epochs=0)  # e.g. post-training quantisation
    assert [r.fit.epochs_completed for r in result.runs] == [0, 0]
    assert (tmp / "models/tiny/untrained/seed0.pt").is_file()
    assert not (tmp / "models/tiny/untrained/seed0.run.json").exists()


def test_hashing_a_model_leaves_it_trainable():
    """Observers of quantisation-aware training resize their buffers in the first forward pass:
    the digest must not pin the model's storage (a NumPy view of it would)."""
    import timm

    from resnet_review.engine import state_digest
    from resnet_review.techniques import compression

    qat = compression.prepare_qat(timm.create_model("resnet18", num_classes=10, in_chans=1),
                               (torch.randn(2, 1, 28, 28),))
    before = state_digest(qat)
    qat.train()(torch.randn(4, 1, 28, 28))
    assert state_digest(qat) != before  # the observers saw data: another state
