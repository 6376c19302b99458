"""Corruptions keep shapes and ranges, grow with severity, and are the same for every model."""

import pytest
import torch

from resnet_review.data import MEAN, STD, apply_view
from resnet_review.robustness import CORRUPTIONS, corrupt, corrupted_sets, corruption_accuracy


@pytest.fixture(scope="module")
def pixels(tiny_splits):
    return (tiny_splits.test.inputs[0][:64] * STD + MEAN).clamp(0, 1)


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruptions_keep_shape_and_range_and_grow_with_severity(pixels, kind):
    distances = []
    for severity in (1, 2, 3):
        out = corrupt(pixels, kind, severity)
        assert out.shape == pixels.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
        distances.append(float((out - pixels).abs().mean()))
    assert 0 < distances[0] < distances[1] < distances[2], distances


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruptions_are_seeded(pixels, kind):
    assert torch.equal(corrupt(pixels, kind, 2, seed=3), corrupt(pixels, kind, 2, seed=3))


def test_bad_corruption_arguments_are_named(pixels):
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(pixels, "fog", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(pixels, "contrast", 4)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        corrupt(pixels[0, 0], "contrast", 1)


def test_corrupted_sets_are_stratified_normalised_and_cover_every_input(tiny_splits):
    sets = corrupted_sets(tiny_splits.test, 50, severities=[1, 3])
    assert sorted(sets) == sorted(f"{k}@{s}" for k in CORRUPTIONS for s in (1, 3))
    noisy = sets["gaussian_noise@3"]
    assert len(noisy) == 50 and torch.bincount(noisy.targets).tolist() == [5] * 10
    assert noisy.inputs[0].mean().abs() < 1.5  # normalised again, like the clean inputs
    pair = corrupted_sets(apply_view(tiny_splits.test, "pair"), 20)["occlusion@2"]
    assert [tuple(x.shape) for x in pair.inputs] == [(20, 1, 14, 28)] * 2


def test_corruption_accuracy_of_a_constant_model_is_its_class_share(tiny_splits):
    class Always(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 3), 10).float()

    accuracy = corruption_accuracy(Always(), corrupted_sets(tiny_splits.test, 100))
    assert set(accuracy) == {f"{k}@2" for k in CORRUPTIONS}
    assert all(a == pytest.approx(0.1) for a in accuracy.values())
