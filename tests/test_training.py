"""Training-technique hooks: the distillation loss by hand, augmentations that keep labels right."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_review.data import MEAN, STD
from resnet_review.training import augmentation, distill_loss, distillation


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
    torch.manual_seed(0)
    (out,), soft = augmentation(names, num_classes=10, mean=MEAN, std=STD)((x,), y)
    assert out.shape == x.shape and soft.shape == (32, 10)
    assert torch.allclose(soft.sum(1), torch.ones(32))
    # timm mixes each image with the batch reversed: lambda of its own label, 1 - lambda of its partner's
    own, partner = soft.gather(1, y[:, None]).squeeze(1), soft.gather(1, y.flip(0)[:, None]).squeeze(1)
    differ = y != y.flip(0)
    lam = own[differ]
    assert torch.allclose(lam, lam[0].expand_as(lam)) and 0 < lam[0] <= 1
    assert torch.allclose(partner[differ], 1 - lam)
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
