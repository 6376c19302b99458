"""Training-technique hooks: the distillation loss by hand, augmentations that keep labels right."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from resnet_review.config import ParamsError, validate_params
from resnet_review.data import MEAN, STD
from resnet_review.engine import seed_everything
from resnet_review.experiment import Stage
from resnet_review.techniques import augmentation as augment_technique
from resnet_review.techniques import distillation as distill_technique
from resnet_review.techniques.augmentation import augmentation
from resnet_review.techniques.distillation import distill_loss, distillation


def test_distillation_loss_matches_a_hand_computation():
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0]])
    target = torch.tensor([0])
    t, alpha = 2.0, 0.7
    p_t = [math.exp(v / t) for v in (1.0, 1.0, 0.0)]
    p_t = [v / sum(p_t) for v in p_t]
    p_s = [math.exp(v / t) for v in (2.0, 0.0, -1.0)]
    p_s = [v / sum(p_s) for v in p_s]
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)))
    expected = alpha * t * t * kl + (1 - alpha) * ce
    loss = distill_loss(student, teacher, target, temperature=t, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # alpha 0 is plain cross-entropy; a student equal to its teacher has no soft loss
    assert distill_loss(student, teacher, target, alpha=0.0).item() == pytest.approx(ce, rel=1e-5)
    assert distill_loss(teacher, teacher, target, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distill_loss(student, teacher, target, temperature=0)


def test_distillation_hook_freezes_the_teacher_and_trains_the_student():
    teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    loss = distillation(teacher, temperature=3.0, alpha=0.5)(student(torch.ones(2, 4)), torch.tensor([0, 1]),
                                                            (torch.ones(2, 4),))
    loss.backward()
    assert student.weight.grad is not None and teacher.weight.grad is None and not teacher.training


@pytest.mark.parametrize("names", [["mixup"], ["cutmix"], ["mixup", "cutmix"], ["randaugment", "mixup",
                                                                                 "random_erasing"]])
def test_mixed_targets_are_distributions_that_keep_the_labels(names, tiny_splits):
    x, y = tiny_splits.train.inputs[0][:32], tiny_splits.train.targets[:32]
    seed_everything(0)  # timm draws lambda from NumPy and RandAugment from Python's random: seed them all
    (out,), soft = augmentation(names, num_classes=10, mean=MEAN, std=STD)((x,), y)
    assert out.shape == x.shape and soft.shape == (32, 10)
    assert torch.allclose(soft.sum(1), torch.ones(32))
    # timm mixes each image with the batch reversed: lambda of its own label, 1 - lambda of its partner's
    own, partner = soft.gather(1, y[:, None]).squeeze(1), soft.gather(1, y.flip(0)[:, None]).squeeze(1)
    differ = y != y.flip(0)
    lam = own[differ]
    assert torch.allclose(lam, lam[0].expand_as(lam)) and 0 < lam[0] <= 1
    assert torch.allclose(partner[differ], 1 - lam, atol=1e-6)
    assert torch.allclose(own[~differ], torch.ones(int((~differ).sum())))


def test_randaugment_and_erasing_keep_hard_labels_and_pixel_range(tiny_splits):
    x, y = tiny_splits.train.inputs[0][:16], tiny_splits.train.targets[:16]
    torch.manual_seed(0)
    (out,), labels = augmentation(["randaugment", "random_erasing"], num_classes=10, mean=MEAN, std=STD)((x,), y)
    assert torch.equal(labels, y) and not torch.equal(out, x)
    pixels = out * STD + MEAN
    assert pixels.isfinite().all()


def test_unknown_augmentation_is_named():
    with pytest.raises(ValueError, match="unknown augmentations \\['autoaugment'\\]"):
        augmentation(["autoaugment"], num_classes=10, mean=MEAN, std=STD)


# --------------------------------------------------------------------------- stage glue
TINY_BUDGET = {"train_size": 120, "val_size": 40, "test_size": 80, "img_size": 28, "epochs": 1, "batch_size": 40,
               "seeds": [0, 1], "bootstrap_resamples": 0, "latency_repeats": 1, "measure_memory": False,
               "corruption_size": 0}


def tiny_stages(paths, tmp_path, **sections):
    """Stages of a tiny smoke budget whose params sections are replaced by ``sections``."""
    raw = yaml.safe_load(paths.params.read_text())
    raw["profile"] = "smoke"
    raw["profiles"]["smoke"] = TINY_BUDGET
    raw.update(sections)
    params = validate_params(raw)
    return {name: Stage(name, params=params, reports_dir=str(tmp_path / "stages"), models_dir=str(tmp_path / "models"),
                        root=paths.root) for name in sections}


def test_each_student_learns_from_its_own_seeds_teacher(paths, tmp_path, monkeypatch):
    stages = tiny_stages(paths, tmp_path, teacher={"variants": {"t18": {"model": "resnet18"}}},
                         distillation={"temperature": 3.0, "alpha": 0.5, "variants": {
                             "s18": {"model": "resnet18", "alpha": 0.8,
                                     "scratch": {"stage": "teacher", "variant": "t18"}}}})
    with pytest.raises(FileNotFoundError, match="run `dvc repro standalone@teacher` first"):
        distill_technique.teacher_of(stages["distillation"])
    stages["teacher"].run_variants()
    stages["teacher"].finish()
    seen = []
    original = distill_technique.distillation

    def spy(teacher, **kw):
        seen.append((next(teacher.parameters()).detach().clone(), kw))
        return original(teacher, **kw)

    monkeypatch.setattr(distill_technique, "distillation", spy)
    results = distill_technique.run_distillation(stages["distillation"])
    assert [r.seed for r in results["s18"].runs] == [0, 1] and len(seen) == 2
    for (weights, kw), seed in zip(seen, (0, 1)):
        saved = torch.load(tmp_path / "models" / "teacher" / "t18" / f"seed{seed}.pt", weights_only=True)
        assert torch.equal(weights.cpu(), next(iter(saved.values())))
        assert kw == {"temperature": 3.0, "alpha": 0.8}  # the variant's alpha over the stage's
    assert not torch.equal(seen[0][0], seen[1][0])
    block = json.loads((tmp_path / "stages" / "distillation" / "metrics.json").read_text())["s18"]
    assert block["teacher"] == "teacher/t18" and block["alpha"] == 0.8 and block["temperature"] == 3.0


def test_an_ambiguous_teacher_must_be_named(paths, tmp_path):
    two = {"a": {"model": "resnet18"}, "b": {"model": "resnet18"}}
    stages = tiny_stages(paths, tmp_path, teacher={"variants": two},
                         distillation={"variants": {"s": {"model": "resnet18"}}})
    folder = tmp_path / "stages" / "teacher"
    folder.mkdir(parents=True, exist_ok=True)
    per_seed = {"seed": [0, 1], "test_acc": [0.5, 0.5]}
    (folder / "metrics.json").write_text(json.dumps({"profile": "smoke", "a": {"per_seed": per_seed},
                                                     "b": {"per_seed": per_seed}}))
    with pytest.raises(ValueError, match=r"holds the teachers \['a', 'b'\]; set `distillation.teacher.variant`"):
        distill_technique.teacher_of(stages["distillation"])


def test_augmentation_variants_transform_every_training_batch_and_only_theirs(paths, tmp_path, monkeypatch):
    stage = tiny_stages(paths, tmp_path, augmentation={"model": "resnet18", "throughput_batches": 2, "variants": {
        "none": {}, "mixed": {"augment": ["mixup", "random_erasing"]}}})["augmentation"]
    calls = {}
    original = augment_technique.stage_augmentation

    def counting(stage, names):
        transform = original(stage, names)
        if transform is None:
            return None

        def counted(inputs, targets):
            calls[tuple(names)] = calls.get(tuple(names), 0) + 1
            return transform(inputs, targets)
        return counted

    monkeypatch.setattr(augment_technique, "stage_augmentation", counting)
    results = augment_technique.run_augmentation(stage)
    assert calls == {("mixup", "random_erasing"): 3 * 2}  # 120 images / batch 40 = 3 steps, 2 seeds
    assert results["mixed"].info["augment"] == "mixup+random_erasing" and results["none"].info["augment"] == "none"
    speed = augment_technique.augmentation_throughput(stage, {"erasing": ["random_erasing"]})
    row = speed.loc["erasing"]
    assert row.transform_images_per_s > 0 and row.train_step_images_per_s > 0 and row.epoch_slowdown > 1


def test_augmentation_and_distillation_params_are_checked(paths):
    raw = yaml.safe_load(paths.params.read_text())
    raw["augmentation"]["variants"]["bad"] = {"augment": ["mixup", "autoaugment"]}
    raw["distillation"]["variants"]["resnet18_kd"]["alpha"] = 1.5
    with pytest.raises(ParamsError) as err:
        validate_params(raw)
    assert "augmentation.variants.bad.augment" in str(err.value) and "autoaugment" in str(err.value)
    assert "distillation.variants.resnet18_kd.alpha" in str(err.value)
