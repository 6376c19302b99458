import pytest
import torch
from torch import nn

from resnet_review.config import Recipe
from resnet_review.data import TensorData
from resnet_review.engine import Accel, NonFiniteLossError, fit, seed_everything, warmup_cosine
from resnet_review.evaluate import evaluate
from resnet_review.models import build_model

CPU = Accel.for_device("cpu")
RECIPE = Recipe(lr=0.05, warmup_epochs=0.2)


def resnet18(seed=0):
    seed_everything(seed)
    return build_model("resnet18", num_classes=10, in_chans=1)


@pytest.mark.slow
def test_engine_learns_fashion_mnist(small_splits):
    model = resnet18()
    result = fit(model, small_splits.train, small_splits.val, recipe=RECIPE, epochs=3, batch_size=64, accel=CPU)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.7
    test = evaluate(model, small_splits.test)
    assert test.accuracy > 0.6, test.accuracy  # chance is 0.1
    assert test.accuracy_ci[0] < test.accuracy < test.accuracy_ci[1]
    assert result.images_per_s > 0 and result.epochs_completed == 3


@pytest.mark.slow
@pytest.mark.probe
def test_resume_continues_where_an_interrupted_run_stopped(tiny_splits, tmp_path):
    kwargs = dict(recipe=RECIPE, epochs=3, batch_size=32, accel=CPU, seed=7)
    reference = resnet18(seed=7)
    full = fit(reference, tiny_splits.train, tiny_splits.val, checkpoint_path=tmp_path / "ref.pt", **kwargs)

    def interrupt(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(resnet18(seed=7), tiny_splits.train, tiny_splits.val, checkpoint_path=tmp_path / "run.pt",
            on_epoch_end=interrupt, **kwargs)
    assert torch.load(tmp_path / "run.pt", weights_only=True)["epoch"] == 2
    resumed_model = resnet18(seed=7)
    logged = []
    resumed = fit(resumed_model, tiny_splits.train, tiny_splits.val, checkpoint_path=tmp_path / "run.pt",
                  log_epoch=lambda epoch, metrics: logged.append(epoch), **kwargs)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_completed == 3
    assert logged == [1, 2, 3]  # the epochs before the interruption are replayed to the logger
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history])
    for (name, a), b in zip(reference.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


@pytest.mark.probe
def test_a_checkpoint_of_another_configuration_is_not_resumed(tiny_splits, tmp_path):
    kwargs = dict(epochs=1, batch_size=32, accel=CPU, checkpoint_path=tmp_path / "c.pt")
    fit(resnet18(), tiny_splits.train, None, recipe=RECIPE, **kwargs)
    other = fit(resnet18(), tiny_splits.train, None, recipe=RECIPE.model_copy(update={"lr": 0.01}), **kwargs)
    assert other.resumed_from_epoch == 0 and other.epochs_completed == 1


@pytest.mark.probe
def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tiny_splits, tmp_path):
    calls = {"n": 0}
    steps_per_epoch = len(tiny_splits.train) // 32

    def loss_fn(logits, targets, inputs):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(logits, targets)
        return loss * float("nan") if calls["n"] > steps_per_epoch else loss  # breaks in epoch 2

    ckpt = tmp_path / "last.pt"
    with pytest.raises(NonFiniteLossError, match=r"became nan in epoch 2.*last good checkpoint .*after epoch 1"):
        fit(resnet18(), tiny_splits.train, None, recipe=RECIPE, epochs=3, batch_size=32, accel=CPU,
            loss_fn=loss_fn, checkpoint_path=ckpt, nan_check_every=1)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_hooks_batch_transform_callback_and_two_input_models(tiny_splits):
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(28 * 28, 10), nn.Linear(28 * 28, 10)

        def forward(self, x1, x2):
            return self.a(x1.flatten(1)) + self.b(x2.flatten(1))

    x = tiny_splits.train.inputs[0]
    paired = TensorData((x, x.flip(-1)), tiny_splits.train.targets)
    seen = {"transform": 0, "epochs": []}

    def soft_targets(inputs, targets):  # what mixup does: soft labels that sum to 1
        seen["transform"] += 1
        return inputs, nn.functional.one_hot(targets, 10).float() * 0.9 + 0.01

    def stop_after_two(epoch, metrics):
        seen["epochs"].append(epoch)
        return epoch == 2

    model = TwoInputs()
    result = fit(model, paired, None, recipe=RECIPE, epochs=5, batch_size=64, accel=CPU,
                 batch_transform=soft_targets, on_epoch_end=stop_after_two)
    assert result.stopped_early and seen["epochs"] == [1, 2] and seen["transform"] == 2 * (256 // 64)
    assert model(x[:2], x[:2]).shape == (2, 10)


def test_warmup_then_cosine_schedule():
    values = [warmup_cosine(s, 100, 10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] < 0.01
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_bad_arguments_fail_before_training(tiny_splits):
    with pytest.raises(ValueError, match="epochs and batch_size must be positive"):
        fit(resnet18(), tiny_splits.train, None, recipe=RECIPE, epochs=0, batch_size=32, accel=CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA on a machine without it")
def test_asking_for_a_missing_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="device 'cuda' was requested"):
        Accel.for_device("cuda")


def test_resume_checkpoints_are_written_at_most_every_checkpoint_every_s(tiny_splits, tmp_path):
    kwargs = dict(recipe=RECIPE, epochs=2, batch_size=64, accel=CPU)
    fit(resnet18(), tiny_splits.train, None, checkpoint_path=tmp_path / "rare.pt", checkpoint_every_s=3600, **kwargs)
    assert not (tmp_path / "rare.pt").exists()  # two short epochs: no ~50 MB write at all
    fit(resnet18(), tiny_splits.train, None, checkpoint_path=tmp_path / "every.pt", checkpoint_every_s=0, **kwargs)
    assert torch.load(tmp_path / "every.pt", weights_only=True)["epoch"] == 2


@pytest.mark.slow
def test_val_every_images_spaces_validation_without_changing_the_training(tiny_splits):
    # tiny_splits: 256 training images, batch 32 -> 256 images an epoch; validate every 600 images
    kwargs = dict(recipe=RECIPE, epochs=5, batch_size=32, accel=CPU, seed=3)
    every = fit(resnet18(3), tiny_splits.train, tiny_splits.val, **kwargs)
    spaced_model = resnet18(3)
    spaced = fit(spaced_model, tiny_splits.train, tiny_splits.val, val_every_images=600, **kwargs)
    # 256, 512, 768 >= 600 -> after epoch 3; then 256, 512 < 600 but epoch 5 is the last
    assert [h["epoch"] for h in spaced.history if "val_acc" in h] == [3, 5]
    assert all("val_acc" in h for h in every.history)
    assert [h["train_loss"] for h in spaced.history] == [h["train_loss"] for h in every.history]
    assert spaced.final["val_acc"] == every.final["val_acc"]


def _dropout_resnet18(seed):
    seed_everything(seed)
    return build_model("resnet18", num_classes=10, in_chans=1, drop_rate=0.3)


@pytest.mark.slow
def test_models_trained_side_by_side_get_the_numbers_they_get_alone(tiny_splits):
    """fit_group swaps each run's random state in around its steps: shuffling, dropout and an
    augmentation that draws from torch's and NumPy's global generators match the runs alone."""
    from resnet_review.engine import RngState, Run, fit_group
    from resnet_review.techniques.augmentation import augmentation

    def transform():
        return augmentation(["mixup", "random_erasing"], num_classes=10, mean=0.0, std=1.0)

    kwargs = dict(recipe=RECIPE, epochs=2, batch_size=32, accel=CPU)
    alone = {}
    for seed in (3, 4):
        model = _dropout_resnet18(seed)
        alone[seed] = (fit(model, tiny_splits.train, tiny_splits.val, seed=seed, batch_transform=transform(),
                           **kwargs), model)
    runs = []
    for seed in (3, 4):
        model = _dropout_resnet18(seed)
        runs.append(Run(model, tiny_splits.train, tiny_splits.val, seed=seed, batch_transform=transform(),
                        rng=RngState("cpu")))
    together = fit_group(runs, **kwargs)
    for run, result in zip(runs, together):
        single, single_model = alone[run.seed]
        assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in single.history]
        assert [h["val_acc"] for h in result.history] == [h["val_acc"] for h in single.history]
        for (name, a), b in zip(single_model.state_dict().items(), run.model.state_dict().values()):
            assert torch.equal(a, b), name
    # the two seeds did train differently: the test would pass vacuously otherwise
    assert together[0].history[-1]["train_loss"] != together[1].history[-1]["train_loss"]


@pytest.mark.slow
def test_a_chunk_deadline_stops_between_epochs_and_the_rerun_finishes_identically(tiny_splits, tmp_path):
    import time

    from resnet_review.engine import ChunkDeadline

    kwargs = dict(recipe=RECIPE, epochs=3, batch_size=32, accel=CPU, seed=5, checkpoint_last=True)
    reference = resnet18(seed=5)
    full = fit(reference, tiny_splits.train, tiny_splits.val, **kwargs)

    def slow_epoch(epoch, metrics):  # the deadline falls inside the second epoch's expected time
        time.sleep(3.0)

    model = resnet18(seed=5)
    with pytest.raises(ChunkDeadline, match=r"seed5 stopped after epoch 1/3"):
        fit(model, tiny_splits.train, tiny_splits.val, checkpoint_path=tmp_path / "run.pt",
            desc="s/v/seed5", deadline=time.time() + 2.0, on_epoch_end=slow_epoch, **kwargs)
    assert torch.load(tmp_path / "run.pt", weights_only=True)["epoch"] == 1
    resumed_model = resnet18(seed=5)
    resumed = fit(resumed_model, tiny_splits.train, tiny_splits.val, checkpoint_path=tmp_path / "run.pt", **kwargs)
    assert resumed.resumed_from_epoch == 1
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history])
    # checkpoint_last: the finished run is on disk, so a third call trains nothing
    again = fit(resnet18(seed=5), tiny_splits.train, tiny_splits.val, checkpoint_path=tmp_path / "run.pt",
                deadline=time.time() - 1, **kwargs)
    assert again.resumed_from_epoch == 3 and again.history == resumed.history


@pytest.mark.slow
def test_models_of_one_architecture_compile_once_in_a_group(tiny_splits):
    """Dynamo inlines nn.Modules (parameters are graph inputs): the seeds of a variant trained side
    by side share the first one's compiled graph instead of compiling per seed."""
    from torch._dynamo.utils import counters

    from resnet_review.engine import Run, fit_group

    def small(seed):
        seed_everything(seed)
        return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, 10))

    torch._dynamo.reset()
    counters.clear()
    part = tiny_splits.train.take(torch.arange(64))
    runs = [Run(small(seed), part, seed=seed) for seed in (0, 1, 2)]
    results = fit_group(runs, recipe=RECIPE, epochs=1, batch_size=32, accel=Accel(torch.device("cpu"), None, False,
                                                                                   compile=True))
    assert all(r.epochs_completed == 1 for r in results)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.probe
def test_a_truncated_resume_checkpoint_is_named_discarded_and_training_starts_afresh(tiny_splits, tmp_path, capsys):
    kwargs = dict(recipe=RECIPE, epochs=1, batch_size=32, accel=CPU, checkpoint_path=tmp_path / "run.pt")
    fit(resnet18(), tiny_splits.train, None, **kwargs)
    data = (tmp_path / "run.pt").read_bytes()
    (tmp_path / "run.pt").write_bytes(data[:len(data) // 2])
    again = fit(resnet18(), tiny_splits.train, None, **kwargs)
    assert again.resumed_from_epoch == 0 and again.epochs_completed == 1
    assert f"resume checkpoint {tmp_path / 'run.pt'} is unreadable" in capsys.readouterr().err
    assert torch.load(tmp_path / "run.pt", weights_only=True)["epoch"] == 1  # a good one in its place


@pytest.mark.slow
@pytest.mark.probe
def test_a_checkpoint_of_other_images_or_hooks_is_not_resumed(tiny_splits, paths, tmp_path):
    from resnet_review.data import load_splits
    from resnet_review.techniques.distillation import distillation

    def train_split(**changes):
        return load_splits(paths.prepared, **{"train_size": 256, "val_size": 128, "test_size": 256,
                                               "img_size": 28, **changes}).train

    kwargs = dict(recipe=RECIPE, epochs=1, batch_size=32, accel=CPU, checkpoint_path=tmp_path / "c.pt")
    fit(resnet18(), tiny_splits.train, None, **kwargs)
    same = fit(resnet18(), tiny_splits.train, None, **kwargs)
    assert same.resumed_from_epoch == 1  # the control: the same run resumes
    # the same number of images under the same name, at another size or from another draw
    smaller, other_draw = train_split(img_size=24), train_split(data_seed=1)
    assert smaller.name == other_draw.name == tiny_splits.train.name and len(smaller) == len(other_draw)
    assert fit(resnet18(), smaller, None, **kwargs).resumed_from_epoch == 0
    assert fit(resnet18(), other_draw, None, **kwargs).resumed_from_epoch == 0
    teacher = resnet18(seed=1)
    fit(resnet18(), tiny_splits.train, None, loss_fn=distillation(teacher, temperature=4.0), **kwargs)
    hotter = fit(resnet18(), tiny_splits.train, None, loss_fn=distillation(teacher, temperature=8.0), **kwargs)
    assert hotter.resumed_from_epoch == 0
