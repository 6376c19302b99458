"""HFF-SEnet and M-MFFnet: the readings of the review that their parameters select."""

import pytest
import torch

from resnet_review.models import build_model
from resnet_review.models.hff import HFFSENet
from resnet_review.models.mmff import MultiModalFeatureFusion


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("levels", [(1, 2, 3, 4), (4,), (2, 4)])
def test_hff_has_one_module_per_level_and_a_matching_head(levels):
    model = build_model("hff_senet", num_classes=10, in_chans=1, levels=list(levels), channels=32)
    assert len(model.hff) == len(levels) and model.fc.in_features == 32 * len(levels)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_hff_cross_level_fusion_feeds_each_level_into_the_next():
    model = build_model("hff_senet", channels=32, cross_level=True).eval()
    seen = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append(args[1] is not None)) for m in model.hff]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        fused = model(x)
        model.cross_level = False
        independent = model(x)
    for h in hooks:
        h.remove()
    # the first level has nothing below it; every other level receives the previous one
    assert seen[:4] == [False, True, True, True] and seen[4:] == [False] * 4
    assert not torch.allclose(fused, independent)


def test_hff_refuses_unknown_levels():
    with pytest.raises(ValueError, match="levels must be a non-empty subset"):
        HFFSENet(levels=(0, 5))


@pytest.mark.parametrize("kwargs", [{}, {"shared": False}, {"fusion": "late"}, {"nonlinear": True}])
def test_mmff_output_depends_on_both_inputs(kwargs):
    model = build_model("mmff_resnet50", num_classes=10, in_chans=1, **kwargs).eval()
    x1, x2 = torch.randn(4, 1, 14, 28), torch.randn(4, 1, 14, 28)
    with torch.no_grad():
        out = model(x1, x2)
        assert out.shape == (4, 10)
        assert not torch.allclose(out, model(torch.randn_like(x1), x2))
        assert not torch.allclose(out, model(x1, torch.randn_like(x2)))


def test_mmff_shares_one_backbone_or_has_two():
    shared = build_model("mmff_resnet50")
    separate = build_model("mmff_resnet50", shared=False)
    assert len(shared.backbones) == 1 and len(separate.backbones) == 2
    backbone = sum(p.numel() for p in shared.backbones.parameters())
    assert sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters()) == backbone


def test_mmff_gradients_reach_both_backbones_and_the_fusion_block():
    model = build_model("mmff_resnet50", shared=False)
    model(torch.randn(2, 1, 14, 28), torch.randn(2, 1, 14, 28)).sum().backward()
    for part in (model.backbones[0], model.backbones[1], model.mmff.conv1, model.mmff.conv2, model.mmff.fusion):
        # (timm zero-initialises each block's last BN scale, so single tensors may get zero gradient)
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("nonlinear", [False, True])
def test_the_printed_fusion_block_is_affine_and_the_nonlinear_one_is_not(nonlinear):
    block = MultiModalFeatureFusion(8, 8, 4, nonlinear=nonlinear).eval()
    a, b, c, d = (torch.randn(2, 8, 3, 3) for _ in range(4))
    with torch.no_grad():
        zero = block(torch.zeros_like(a), torch.zeros_like(b))
        added = block(a + c, b + d) - zero
        summed = (block(a, b) - zero) + (block(c, d) - zero)
    assert torch.allclose(added, summed, atol=1e-5) is not nonlinear


def test_mismatched_pairs_get_a_clear_error():
    model = build_model("mmff_resnet50")
    with pytest.raises(ValueError, match=r"batch sizes differ \(4 vs 3\)"):
        model(torch.randn(4, 1, 14, 28), torch.randn(3, 1, 14, 28))
    with pytest.raises(ValueError, match=r"x2 has shape \(4, 3, 14, 28\), expected \(N, 1, H, W\)"):
        model(torch.randn(4, 1, 14, 28), torch.randn(4, 3, 14, 28))
    with pytest.raises(ValueError, match="cannot fuse feature maps"):
        MultiModalFeatureFusion(8, 8, 4)(torch.randn(2, 8, 3, 3), torch.randn(2, 8, 2, 2))
    with pytest.raises(ValueError, match="fusion must be 'mid'"):
        build_model("mmff_resnet50", fusion="early")
    with pytest.raises(ValueError, match="nonlinear applies to the mid-level fusion block"):
        build_model("mmff_resnet50", fusion="late", nonlinear=True)


def test_mmff_backbone_loads_a_local_checkpoint_instead_of_downloading(tmp_path):
    source = build_model("resnet18", num_classes=1000, in_chans=1)  # e.g. an ImageNet checkpoint's classifier
    torch.save(source.state_dict(), tmp_path / "resnet18.pt")
    model = build_model("mmff_resnet50", backbone="resnet18", shared=False,
                        backbone_pretrained_path=tmp_path / "resnet18.pt")
    for backbone in model.backbones:
        assert torch.equal(backbone.conv1.weight, source.conv1.weight)
    torch.save(build_model("resnet18", in_chans=3).state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(ValueError, match="shape mismatch conv1.weight"):
        build_model("mmff_resnet50", backbone="resnet18", backbone_pretrained_path=tmp_path / "rgb.pt")
