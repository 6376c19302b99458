"""Hyper-parameter tuning: the study resumes after an interruption without re-running finished
trials, the pruner stops a trial below the median, a storage URL is honoured, the test set takes
no part in the search, and the tuned recipe is compared with the baseline's on the same seeds."""

from __future__ import annotations

import copy
import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from resnet_review.config import ParamsError, validate_params
from resnet_review.data import Splits
from resnet_review.experiment import Stage
from resnet_review.techniques import tuning

# ResNet18 at 16 px on 32 real training images: a trial takes about a second
TINY_BUDGET = {"train_size": 32, "val_size": 16, "test_size": 16, "img_size": 16, "epochs": 2, "batch_size": 8,
               "seeds": [0, 1], "bootstrap_resamples": 0, "latency_repeats": 1, "measure_memory": False,
               "corruption_size": 0}
TINY_SEARCH = {"optimizer": ["sgd", "adamw"],
               "reference": {"sgd": {"lr": 0.05, "weight_decay": 5.0e-5}, "adamw": {"lr": 0.002, "weight_decay": 0.05}},
               "lr_factor": {"low": 0.25, "high": 4.0, "log": True},
               "weight_decay_factor": {"low": 0.1, "high": 10.0, "log": True},
               "label_smoothing": {"low": 0.0, "high": 0.2}, "batch_size": [8, 16]}


def tiny_tuning_params(paths) -> dict:
    """params.yaml under the smoke profile shrunk to TINY_BUDGET, with a 4-trial study of ResNet18."""
    raw = yaml.safe_load(paths.params.read_text())
    raw["profile"] = "smoke"
    raw["profiles"]["smoke"] = dict(TINY_BUDGET)
    raw["baseline"] = {"model": "resnet18"}
    raw["hparam_tuning"] = {"model": "resnet18", "n_trials": {"smoke": 4, "cpu": 4, "gpu": 4}, "search": TINY_SEARCH,
                            "pruner": {"n_startup_trials": 2, "min_epochs_fraction": 0.5}}
    return raw


@pytest.fixture
def raw(paths):
    return tiny_tuning_params(paths)


def open_stage(raw, paths, tmp_path, name: str = "hparam_tuning", **section) -> Stage:
    raw = copy.deepcopy(raw)
    raw[name] |= section
    return Stage(name, params=validate_params(raw), reports_dir=str(tmp_path / "stages"),
                 models_dir=str(tmp_path / "models"), root=paths.root)


class FitCalls:
    """Counts the trials that train, and interrupts the training of trial ``interrupt_at`` (0-based)."""

    def __init__(self, monkeypatch, interrupt_at: int | None = None):
        self.trials: list[int] = []
        fit = tuning.fit

        def counted(*args, desc: str, **kwargs):
            self.trials.append(int(desc.rsplit("trial", 1)[1]))
            if len(self.trials) - 1 == interrupt_at:
                raise KeyboardInterrupt  # Ctrl-C in the middle of a trial
            return fit(*args, desc=desc, **kwargs)

        monkeypatch.setattr(tuning, "fit", counted)


def test_an_interrupted_study_resumes_without_rerunning_finished_trials(raw, paths, tmp_path, monkeypatch):
    stage = open_stage(raw, paths, tmp_path)
    calls = FitCalls(monkeypatch, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        tuning.run_study(stage)
    assert (stage.models_dir / tuning.STUDY_FILE).is_file()  # the default storage, inside the stage's outputs
    first = optuna.load_study(study_name="resnet50_recipe", storage=tuning.storage_url(stage))
    assert [t.state for t in first.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    before = {t.number: (t.params, t.value) for t in first.trials[:2]}
    first.ask()  # and a trial a killed process left RUNNING

    calls = FitCalls(monkeypatch)
    study = tuning.run_study(open_stage(raw, paths, tmp_path))  # a new process: a new Stage
    finished = tuning.finished_trials(study)
    assert len(finished) == 4 and len(calls.trials) == 2  # only the two missing ones were trained
    assert {t.number: (t.params, t.value) for t in study.trials[:2]} == before
    assert [t.state for t in study.trials[2:4]] == [TrialState.FAIL, TrialState.RUNNING]  # neither counted
    # the resumed sampler does not replay the draws of the first run
    draws = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(draws)) == len(draws)
    assert study.trials[0].user_attrs["default_recipe"] and study.trials[0].params["lr_factor"] == 1.0

    calls = FitCalls(monkeypatch)
    tuning.run_study(open_stage(raw, paths, tmp_path))
    assert calls.trials == []  # a complete study trains nothing


def test_the_pruner_stops_a_trial_below_the_median(raw, paths, tmp_path):
    stage = open_stage(raw, paths, tmp_path, pruner={"n_startup_trials": 2, "min_epochs_fraction": 0.25})
    study = tuning.open_study(stage)
    epochs = 3

    def fake(accuracies):
        def objective(trial):
            hook = tuning.pruning_hook(trial, epochs, tuning.first_prunable_epoch(stage))
            for epoch, acc in enumerate(accuracies, 1):
                hook(epoch, {"val_acc": acc})
            return accuracies[-1]
        return objective

    study.optimize(fake([0.6, 0.7, 0.8]), n_trials=2)  # the pruner's startup trials
    study.optimize(fake([0.1, 0.1, 0.1]), n_trials=1)
    study.optimize(fake([0.7, 0.75, 0.1]), n_trials=1)  # above the median until the last epoch
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED, TrialState.COMPLETE]
    assert sorted(study.trials[2].intermediate_values) == [1]  # stopped after its first epoch
    assert study.trials[3].value == 0.1  # never pruned after the last epoch: its result is whole


def test_a_diverging_recipe_is_pruned_not_failed(raw, paths, tmp_path, monkeypatch):
    stage = open_stage(raw, paths, tmp_path, n_trials={"smoke": 1, "cpu": 1, "gpu": 1})

    def diverge(*args, **kwargs):
        raise tuning.NonFiniteLossError("training loss became nan in epoch 1 by step 2; no checkpoint was written")

    monkeypatch.setattr(tuning, "fit", diverge)
    study = tuning.run_study(stage)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] and study.trials[0].user_attrs["diverged"]


def test_a_storage_url_is_used_instead_of_the_default_file(raw, paths, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared' / 'optuna.db'}"
    (tmp_path / "shared").mkdir()
    stage = open_stage(raw, paths, tmp_path, storage=url, study_name="shared_study",
                       n_trials={"smoke": 1, "cpu": 1, "gpu": 1})
    tuning.run_study(stage)
    assert not (stage.models_dir / tuning.STUDY_FILE).exists()
    assert len(optuna.load_study(study_name="shared_study", storage=url).trials) == 1


def test_a_study_of_another_setup_is_not_resumed(raw, paths, tmp_path, monkeypatch):
    # the stage's own study (models/<stage>/study.db) is one of its outputs: replaced
    first = tuning.open_study(open_stage(raw, paths, tmp_path))
    assert first.user_attrs["setup"]["training_code"] == tuning.training_code_digest()
    first.enqueue_trial({"optimizer": "sgd"})
    other = open_stage(raw, paths, tmp_path, search={**TINY_SEARCH, "batch_size": [4, 8]})
    fresh = tuning.open_study(other)
    assert fresh.user_attrs["setup"] == {**tuning.study_setup(other), "training_code": tuning.training_code_digest()}
    assert len(fresh.trials) == 1  # the default recipe, enqueued anew; the old study's trials gone
    monkeypatch.setattr(tuning, "training_code_digest", lambda: "other code")  # its trials trained otherwise
    assert tuning.open_study(other).user_attrs["setup"]["training_code"] == "other code"
    # a study at a storage of the user's, shared by machines, is never dropped
    shared = {"storage": f"sqlite:///{tmp_path / 'shared.db'}"}
    tuning.open_study(open_stage(raw, paths, tmp_path, **shared))
    with pytest.raises(ParamsError, match="another search; set hparam_tuning.study_name"):
        tuning.open_study(open_stage(raw, paths, tmp_path, search={**TINY_SEARCH, "batch_size": [4, 8]}, **shared))


class Untouchable:
    """A test split that fails the moment anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the study read the test split ('{name}')")

    def __len__(self):
        raise AssertionError("the study read the test split (len)")


def test_the_study_never_reads_the_test_split(raw, paths, tmp_path, monkeypatch):
    stage = open_stage(raw, paths, tmp_path, n_trials={"smoke": 2, "cpu": 2, "gpu": 2})
    real = stage.splits
    monkeypatch.setattr(stage, "splits_for", lambda *a, **k: Splits(real.train, real.val, Untouchable()))
    study = tuning.run_study(stage)
    assert len(tuning.finished_trials(study)) == 2


@pytest.mark.slow
def test_the_tuned_recipe_is_retrained_over_seeds_and_compared_with_the_baseline(raw, paths, tmp_path):
    # 40 images: batch 16 trains 32 of them per epoch, the profile's batch 8 all 40
    raw["profiles"]["smoke"]["train_size"] = 40
    baseline = open_stage(raw, paths, tmp_path, name="baseline")
    baseline.run("resnet50")  # the control variant's name, as the baseline stage writes it
    baseline.finish()
    stage = open_stage(raw, paths, tmp_path, n_trials={"smoke": 2, "cpu": 2, "gpu": 2},
                       search={**TINY_SEARCH, "batch_size": [16]})
    outcome = tuning.run_tuning(stage)
    best = outcome.study.best_trial
    assert outcome.batch_size == best.params["batch_size"] == 16
    assert outcome.recipe.lr == pytest.approx(TINY_SEARCH["reference"][best.params["optimizer"]]["lr"]
                                              * best.params["lr_factor"])
    assert [r.seed for r in outcome.tuned.runs] == [0, 1]
    assert all(len(r.fit.history) == 2 for r in outcome.tuned.runs)
    assert outcome.tuned.runs[0].fit.history[0]["images"] == 32  # the tuned batch size, not the profile's
    text = stage.claims_markdown()  # claims.yaml's tuning claim: the tuned recipe against the baseline's seeds
    assert text.startswith("* **Hyper-parameter tuning improves ResNet50's accuracy** (Abstract) — "
                           "hparam_tuning/tuned vs baseline/resnet50")
    metrics = json.loads((stage.out_dir / "metrics.json").read_text())
    assert metrics["claims"]["tuning_improves_accuracy"]["effect"]["n"] == 2
    assert metrics["study"]["complete"] + metrics["study"]["pruned"] == 2
    assert metrics["study"]["best_val_acc"] == best.value
    assert metrics["tuned"]["batch_size"] == outcome.batch_size and "per_seed" in metrics["tuned"]
    # the first seed's retrain is the selected trial's run: same seed, data and recipe
    assert outcome.tuned.runs[0].fit.final["val_acc"] == pytest.approx(best.value)


def test_a_recipe_that_differs_from_the_controls_is_refused(raw, paths, tmp_path):
    baseline = open_stage(raw, paths, tmp_path, name="baseline")
    baseline.log_metrics(resnet50={"per_seed": {"seed": [0, 1], "test_acc": [0.5, 0.5]}})
    stage = open_stage(raw, paths, tmp_path, train={"momentum": 0.5})
    with pytest.raises(ParamsError, match=r"differs from baseline's in \['momentum'\]"):
        tuning.run_tuning(stage)


def schema_error(raw, **section) -> str:
    raw = copy.deepcopy(raw)
    raw["hparam_tuning"] |= section
    with pytest.raises(ParamsError) as err:
        validate_params(raw)
    return str(err.value)


def test_the_committed_section_is_valid(paths):
    params = validate_params(yaml.safe_load(paths.params.read_text()))
    cfg = params.stage("hparam_tuning")
    assert cfg.n_trials.smoke <= cfg.n_trials.cpu <= cfg.n_trials.gpu
    assert tuning.params_of(cfg.recipe(params.train), params.budget.batch_size, cfg.search) is not None


@pytest.mark.parametrize("change, message", [
    ({"lr_factor": {"low": 2.0, "high": 1.0, "log": True}}, "hparam_tuning.search.lr_factor: Value error, low must"),
    ({"weight_decay_factor": {"low": 0.0, "high": 1.0, "log": True}},
     "hparam_tuning.search.weight_decay_factor: Value error, a log-uniform range needs low > 0"),
    ({"label_smoothing": {"low": 0.0, "high": 1.0}}, "hparam_tuning.search.label_smoothing: Value error, label"),
    ({"batch_size": [32, 0]}, "hparam_tuning.search.batch_size: Value error, batch sizes must be > 0"),
    ({"optimizer": ["sgd", "adam"]}, "hparam_tuning.search.optimizer.1: Input should be 'sgd' or 'adamw'"),
    ({"reference": {"sgd": {"lr": 0.05, "weight_decay": 5e-5}}}, "adamw"),
])
def test_bad_search_spaces_are_named(raw, change, message):
    assert message in schema_error(raw, search={**TINY_SEARCH, **change})


def test_bad_study_settings_are_named(raw):
    assert "hparam_tuning.n_trials.gpu: Field required" in schema_error(raw, n_trials={"smoke": 1, "cpu": 2})
    assert "hparam_tuning.n_trials.cpu: Input should be greater than 0" in schema_error(
        raw, n_trials={"smoke": 1, "cpu": 0, "gpu": 2})
    assert "hparam_tuning.storage: Value error, storage must be a database URL" in schema_error(
        raw, storage="models/study.db")
    assert "hparam_tuning.pruner.n_warmup: Extra inputs" in schema_error(raw, pruner={"n_warmup": 1})


def test_metrics_show_the_storage_without_machine_paths_or_passwords(raw, paths, tmp_path):
    stage = Stage("hparam_tuning", params=validate_params(copy.deepcopy(raw)), reports_dir=str(tmp_path / "stages"),
                  models_dir="models/scratch", root=paths.root)
    assert tuning.shown_storage(stage) == f"sqlite:///models/scratch/hparam_tuning/{tuning.STUDY_FILE}"
    stage = open_stage(raw, paths, tmp_path, storage="postgresql://me:secret@db.example/optuna")
    assert tuning.shown_storage(stage) == "postgresql://me:***@db.example/optuna"


def test_a_profile_can_draw_its_own_batch_sizes():
    from pathlib import Path

    from resnet_review.config import load_params

    root = Path(__file__).resolve().parents[1]
    tuning_gpu = load_params(root / "params.yaml", profile="gpu").stage("hparam_tuning")
    assert tuning_gpu.search_under("gpu").batch_size == [256, 512, 1024]
    assert tuning_gpu.search_under("cpu") is tuning_gpu.search  # the cpu study's space is unchanged
    assert tuning_gpu.search_under("gpu").lr_factor == tuning_gpu.search.lr_factor


def test_one_worker_draws_exactly_what_tpe_draws(raw, paths, tmp_path):
    """The worker-seeded sampler changes nothing for a study run by one process: the committed
    single-worker studies stay reproducible."""
    space = tuning.search_space(open_stage(raw, paths, tmp_path))

    def draws(sampler):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.enqueue_trial({"optimizer": "sgd", "lr_factor": 1.0})
        study.optimize(lambda t: sum(v for v in tuning.suggest(t, space).values() if isinstance(v, float)),
                       n_trials=14)
        return [t.params for t in study.trials]

    for seed in (0, 7):
        assert draws(tuning.WorkerSeededSampler(seed, 4)) == draws(optuna.samplers.TPESampler(seed=seed,
                                                                                               n_startup_trials=4))


def test_an_sqlite_study_lets_one_worker_at_a_time_read_and_claim_a_trial(tmp_path):
    """A transaction on the study's SQLite file holds the write lock from its start, so that two
    workers cannot both read an enqueued trial as WAITING and both run it."""
    import sqlalchemy

    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = tuning.serialised_sqlite(optuna.storages.RDBStorage(url))
    second = tuning.serialised_sqlite(optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 0.2}}))
    with first.engine.connect() as holder:
        holder.begin()
        holder.execute(sqlalchemy.text("SELECT count(*) FROM trials")).scalar()  # a read: with the lock already
        with pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked"):
            with second.engine.connect() as other:
                other.begin()
        holder.rollback()
    with second.engine.connect() as other:  # free again once the first transaction ends
        other.begin()
        assert other.execute(sqlalchemy.text("SELECT count(*) FROM trials")).scalar() == 0


WORKER = r"""
import json, sys, time
from pathlib import Path
import optuna
from resnet_review.techniques import tuning
from resnet_review.config import validate_params
from resnet_review.experiment import Stage

raw, tmp, me = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3]
stage = Stage("hparam_tuning", params=validate_params(raw), reports_dir=str(tmp / "stages"),
              models_dir=str(tmp / "models"), root=raw.pop("_root", None))
(tmp / f"ready-{me}").touch()
while len(list(tmp.glob("ready-*"))) < 2:  # both open the study at the same instant
    time.sleep(0.001)
study = tuning.open_study(stage)
space = tuning.search_space(stage)
study.optimize(lambda t: (tuning.suggest(t, space), time.sleep(0.2), 0.5)[2], n_trials=3)
"""


@pytest.mark.slow
@pytest.mark.probe
def test_workers_opening_a_study_together_draw_distinct_trials(raw, paths, tmp_path):
    """Two processes that open a new study at the same instant enqueue the default recipe once
    and share no sampler seed: no recipe is drawn twice."""
    import subprocess
    import sys

    (tmp_path / "raw.json").write_text(json.dumps(raw))
    (tmp_path / "worker.py").write_text(WORKER)
    url = f"sqlite:///{tmp_path / 'models/hparam_tuning' / tuning.STUDY_FILE}"
    (tmp_path / "models/hparam_tuning").mkdir(parents=True)
    optuna.storages.RDBStorage(url)  # the database exists: the workers race on the study alone
    workers = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "raw.json"),
                                 str(tmp_path), str(i)], cwd=paths.root, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name=open_stage(raw, paths, tmp_path / "x").config.study_name,
                              storage=url)
    trials = study.get_trials(states=[TrialState.COMPLETE])
    assert len(trials) == 6
    assert sum(bool(t.user_attrs.get("default_recipe")) for t in trials) == 1
    draws = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(draws)) == len(draws), draws
