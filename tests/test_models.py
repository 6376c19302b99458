import pytest
import torch

from resnet_review.models import CheckpointError, build_model, load_pretrained, project_models

# every project model plus the timm baselines the stages use, at a tiny size
MODELS = sorted({"resnet18", "resnet50", *project_models()})


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_and_output_shape(name):
    """Gradients reach every parameter, so no branch of a model is dead."""
    model = build_model(name, num_classes=10, in_chans=1)
    xs = [torch.randn(2, 1, 32, 32, requires_grad=True) for _ in range(getattr(model, "num_inputs", 1))]
    out = model(*xs)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in xs)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_model_suggests_names():
    with pytest.raises(ValueError, match="unknown model 'resnet5'.*resnet50"):
        build_model("resnet5")


def test_local_pretrained_checkpoint_round_trip(tmp_path):
    source = build_model("resnet18", num_classes=10, in_chans=1)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "ckpt.pt")
    loaded = build_model("resnet18", num_classes=10, in_chans=1, pretrained_path=tmp_path / "ckpt.pt")
    x = torch.randn(2, 1, 32, 32)
    source.eval(), loaded.eval()
    assert torch.equal(source(x), loaded(x))


def test_mismatched_checkpoint_is_refused_by_name(tmp_path):
    torch.save(build_model("resnet18", num_classes=1000, in_chans=3).state_dict(), tmp_path / "imagenet.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch conv1.weight.*shape mismatch fc.weight|"
                                              r"shape mismatch fc.weight"):
        build_model("resnet18", num_classes=10, in_chans=3, pretrained_path=tmp_path / "imagenet.pt")
    # a new classifier is allowed when asked for
    model = build_model("resnet18", num_classes=10, in_chans=3, pretrained_path=tmp_path / "imagenet.pt",
                        pretrained_exclude=("fc.",))
    assert model.fc.out_features == 10


@pytest.mark.probe
def test_checkpoints_load_weights_only(tmp_path):
    import argparse  # an arbitrary pickled object, which weights_only loading must refuse

    torch.save({"state_dict": build_model("resnet18").state_dict(), "extra": argparse.Namespace(x=1)},
               tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        load_pretrained(build_model("resnet18"), tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(build_model("resnet18"), tmp_path / "missing.pt")


def test_fpn_levels_and_fusion_are_parameters():
    x = torch.randn(2, 1, 14, 14)  # the low-resolution setting: layer4 is 1x1 here
    full = build_model("fpn_resnet50", levels=[1, 2, 3, 4])
    last = build_model("fpn_resnet50", levels=[4])
    summed = build_model("fpn_resnet50", fusion="sum")
    assert full.fc.in_features == 4 * 256 and last.fc.in_features == 256 and summed.fc.in_features == 256
    assert len(full.fpn.inner_blocks) == 4 and len(last.fpn.inner_blocks) == 1
    for model in (full, last, summed):
        assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="levels"):
        build_model("fpn_resnet50", levels=[0, 5])
    with pytest.raises(ValueError, match="fusion"):
        build_model("fpn_resnet50", fusion="max")
