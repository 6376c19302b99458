"""Transfer learning: class-subset tasks, freezing, loading a source or a user's checkpoint safely,
the stage's params, and the stage itself from a checkpoint the test writes."""

from __future__ import annotations

import argparse
import copy

import pytest
import timm
import torch
import yaml

from resnet_review.config import ParamsError, Recipe, validate_params
from resnet_review.engine import fit, make_optimizer
from resnet_review.experiment import Stage
from resnet_review.models import CheckpointError, build_model
from resnet_review.techniques import transfer


def resnet18(num_classes: int = 5, in_chans: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("resnet18", num_classes=num_classes, in_chans=in_chans)


# --------------------------------------------------------------------------- data
def test_class_subset_keeps_only_those_classes_relabelled_in_order(tiny_splits):
    data = tiny_splits.train
    sub = transfer.class_subset(data, [7, 2])
    assert len(sub) == int(((data.targets == 7) | (data.targets == 2)).sum())
    assert set(sub.targets.tolist()) == {0, 1} and sub.num_classes == 2
    assert sub.classes == (data.classes[7], data.classes[2])
    # label 7 became 0 and label 2 became 1, with their own images, in the original order
    assert torch.equal(sub.inputs[0][sub.targets == 0], data.inputs[0][data.targets == 7])
    assert torch.equal(sub.inputs[0][sub.targets == 1], data.inputs[0][data.targets == 2])
    with pytest.raises(ValueError, match="distinct labels"):
        transfer.class_subset(data, [3, 3])
    with pytest.raises(ValueError, match="distinct labels"):
        transfer.class_subset(data, [10])


def test_fractions_are_stratified_nested_and_keep_every_class(tiny_splits):
    target = transfer.class_subset(tiny_splits.train, [5, 6, 7, 8, 9])
    small = transfer.take_fraction(target, 0.01)
    large = transfer.take_fraction(target, 0.5)
    assert len(small) == transfer.MIN_PER_CLASS * 5  # 1% of ~128 images would be one image
    assert torch.bincount(small.targets, minlength=5).tolist() == [transfer.MIN_PER_CLASS] * 5
    assert len(large) == round(len(target) * 0.5)
    assert torch.bincount(large.targets, minlength=5).min() >= len(large) // 5 - 1
    # the small draw is part of the large one
    rows = {tuple(x.flatten()[:40].tolist()) for x in large.inputs[0]}
    assert all(tuple(x.flatten()[:40].tolist()) in rows for x in small.inputs[0])


# --------------------------------------------------------------------------- freezing
@pytest.mark.parametrize("method, trainable_prefixes", [
    ("frozen_early", ("layer3.", "layer4.", "fc.")),
    ("linear_probe", ("fc.",)),
])
def test_freezing_trains_exactly_the_intended_parameters(method, trainable_prefixes, tiny_splits):
    model = transfer.METHODS[method](resnet18())
    expected = [n for n, _ in resnet18().named_parameters() if n.startswith(trainable_prefixes)]
    assert transfer.trainable_names(model) == expected
    optimised = {id(p) for group in make_optimizer(model, Recipe()).param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}

    before = copy.deepcopy(model.state_dict())
    data = transfer.class_subset(tiny_splits.train, [5, 6, 7, 8, 9])
    fit(model, data, None, recipe=Recipe(lr=0.05), epochs=1, batch_size=16, progress=False)
    after = model.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        trained = key.startswith(trainable_prefixes)
        # frozen: weights and batch-norm statistics alike; trained: every weight moved
        assert changed == trained or (trained and key.endswith("num_batches_tracked")), key


def test_freeze_names_an_unknown_block():
    with pytest.raises(ValueError, match="no top-level module 'layer9'"):
        transfer.freeze(resnet18(), up_to="layer9")


# --------------------------------------------------------------------------- checkpoints
def test_a_user_rgb_imagenet_checkpoint_loads_into_a_grey_five_class_model(tmp_path):
    torch.manual_seed(1)
    imagenet = timm.create_model("resnet18", pretrained=False, num_classes=1000, in_chans=3)
    torch.save({"state_dict": imagenet.state_dict()}, tmp_path / "resnet18_imagenet.pt")
    fresh = resnet18(seed=0)
    model = transfer.load_source_weights(resnet18(seed=0), tmp_path / "resnet18_imagenet.pt")
    source = imagenet.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("fc."):  # a new 5-class classifier, as freshly initialised
            assert torch.equal(value, fresh.state_dict()[key]), key
        elif key == "conv1.weight":  # the RGB stem summed over its channels for grey input
            assert value.shape == (64, 1, 7, 7)
            torch.testing.assert_close(value, source[key].sum(1, keepdim=True))
        else:
            assert torch.equal(value, source[key]), key
    grey = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model.eval().forward_features(grey),
                               imagenet.eval().forward_features(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_a_checkpoint_of_other_shapes_is_refused_naming_the_tensor(tmp_path):
    state = resnet18().state_dict()
    state["layer3.0.conv1.weight"] = torch.zeros(7, 128, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch layer3\.0\.conv1\.weight: checkpoint \(7, 128, 3, 3\)"):
        transfer.load_source_weights(resnet18(), tmp_path / "bad.pt")
    torch.save(build_model("resnet34", num_classes=5).state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(CheckpointError, match=r"not in the model: layer1\.2\."):
        transfer.load_source_weights(resnet18(), tmp_path / "resnet34.pt")


def test_checkpoints_are_loaded_weights_only(tmp_path):
    torch.save({"state_dict": resnet18().state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        transfer.load_source_weights(resnet18(), tmp_path / "pickled.pt")


# --------------------------------------------------------------------------- params
@pytest.fixture
def raw(paths):
    return yaml.safe_load(paths.params.read_text())


def test_transfer_params_are_checked_one_line_each(raw):
    bad = copy.deepcopy(raw)
    bad["transfer"] |= {"source_classes": [0, 1, 12], "methods": ["finetune", "distil"],
                        "fractions": {"1pct": {"train_fraction": 0}}}
    with pytest.raises(ParamsError) as err:
        validate_params(bad)
    for line in ("transfer.source_classes: Value error, classes must be distinct Fashion-MNIST labels",
                 "transfer.methods: Value error, methods must list distinct names of scratch",
                 "transfer.fractions.1pct.train_fraction: Input should be greater than 0"):
        assert line in str(err.value)
    bad = copy.deepcopy(raw)
    bad["transfer"] |= {"source_classes": [0, 1, 5], "variant_profiles": {}}
    with pytest.raises(ParamsError, match=r"disjoint; both hold \[5\]"):
        validate_params(bad)
    bad["transfer"] |= {"source_classes": [0, 1], "variant_profiles": {"finetune_50pct": ["gpu"]}}
    with pytest.raises(ParamsError, match=r"unknown variants \['finetune_50pct'\]"):
        validate_params(bad)
    cfg = validate_params(raw).stage("transfer")
    assert cfg.variant_names()[:2] == ["scratch_1pct", "finetune_1pct"]


# --------------------------------------------------------------------------- the stage
def transfer_stage(raw, paths, tmp_path, **section) -> Stage:
    raw = copy.deepcopy(raw)
    raw["profile"] = "smoke"
    raw["profiles"]["smoke"] |= {"seeds": [0], "corruption_size": 0}
    raw["transfer"] |= {"model": "resnet18", "methods": ["finetune", "linear_probe"], "variant_profiles": {},
                        "fractions": {"10pct": {"train_fraction": 0.1, "epochs_scale": 1}}, **section}
    return Stage("transfer", params=validate_params(raw), root=paths.root,
                 reports_dir=str(tmp_path / "reports"), models_dir=str(tmp_path / "models"))


def test_the_stage_adapts_a_user_checkpoint_without_pretraining(raw, paths, tmp_path):
    imagenet = timm.create_model("resnet18", pretrained=False, num_classes=1000, in_chans=3)
    torch.save(imagenet.state_dict(), tmp_path / "imagenet.pt")
    stage = transfer_stage(raw, paths, tmp_path, pretrained_path=str(tmp_path / "imagenet.pt"))
    results = transfer.run_transfer(stage)
    assert list(results) == ["finetune_10pct", "linear_probe_10pct"]  # no source_pretrain
    probe = results["linear_probe_10pct"]
    assert probe.info["source"] == str(tmp_path / "imagenet.pt") and probe.info["train_images"] == 10
    assert probe.runs[0].test.classes == tuple(stage.splits.train.classes[5:])
    # the probe trained only its classifier: its layer4 is the checkpoint's
    trained = torch.load(probe.runs[0].weights_path, weights_only=True)
    assert torch.equal(trained["layer4.1.conv2.weight"], imagenet.state_dict()["layer4.1.conv2.weight"])
    assert not (tmp_path / "models" / "transfer" / "source_pretrain").exists()
    # every variant has a cost profile for the report (a frozen model its own, counted alike)
    assert results["finetune_10pct"].profile.macs == probe.profile.macs > 0 and probe.profile.params > 0


def test_a_missing_user_checkpoint_stops_the_stage_before_training(raw, paths, tmp_path):
    stage = transfer_stage(raw, paths, tmp_path, pretrained_path="models/no_such_imagenet.pt")
    with pytest.raises(CheckpointError, match="no_such_imagenet.pt does not exist"):
        transfer.run_transfer(stage)
    assert not stage.results
