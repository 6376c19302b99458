"""M-MFFnet: the review's Multi-Modal Feature Fusion ResNet (II.H.2, figure 12), fixed.

The review's code cannot run as printed.  What this module changes, and why, in three kinds:

*Most likely artefacts of the printed figure* (the code reached the paper as extracted text:
its line numbers put the first class at line 04 behind the two visible imports, and the first
class's own ``super().__init__`` is intact), fixed without comment on the authors' code:

1. ``import torch`` is missing (``torch.cat`` and ``torch.flatten`` are used): imported.
2. ``self.resnet.laver3(x1)`` is a typo of ``layer3``.
3. ``x2  self.resnet.conv1(x2)`` and the last four lines of ``forward`` (``self.mmff(x1, x2)``,
   ``self.resnet.avgpool(x)``, ``torch.flatten(x, 1)``, ``self.fc(x)``) lost their ``x2 =`` /
   ``x =`` and the method its ``return``: restored.
4. ``super(ResNet50MMFF, self). init ()`` is ``super().__init__()``.

*Real errors* of the design as printed:

6. The backbone's own classifier (``resnet.fc``, 2048→1000) was built but never used: the
   backbone is built headless.  ``num_classes`` defaults to the data's (10), not 1000, and
   ``in_chans`` is the modality's channel count (1 for Fashion-MNIST), not a fixed 3.
7. Two inputs that cannot be fused (different batch sizes, channel counts the backbone was not
   built for, or maps of different sizes) raise a ``ValueError`` that names the shapes, instead
   of a shape error deep inside ``torch.cat``.

*An adaptation that changes the model under test*:

5. ``models.resnet50(pretrained=True)`` downloads ImageNet weights (and ``pretrained=`` is
   deprecated in torchvision): the backbone is built without weights and trained from scratch
   here, unlike the review's pretrained one; ``backbone_pretrained_path`` loads a local ResNet50
   checkpoint into it where one is at hand.

The fused head as printed is linear: two 1x1 convolutions with no activation between them,
average pooling and a linear layer, so it computes the same class of functions as a linear
classifier on the two pooled feature vectors, i.e. the late-fusion control's function class up
to how the logits are combined. Whatever M-MFF gains over late fusion here comes from training,
not from a richer fusion; ``nonlinear=True`` (batch norm and ReLU after each 1x1 convolution) is
the ablation with a head that is not linear.

Faithful to the figure: *one* backbone is shared by both inputs (``shared=True``), each
2048-channel map is reduced to 256 by a 1x1 convolution, the two are concatenated, fused 512→256
by a 1x1 convolution, average-pooled and classified by one linear layer.  Beyond the figure, as
parameters: ``shared=False`` gives each modality its own backbone, and ``fusion="late"`` is the
late-fusion control (each modality classified on its own pooled features, logits averaged).
"""

from __future__ import annotations

import os
from typing import Literal

import timm
import torch
from torch import nn

from .registry import load_pretrained, register_model


class MultiModalFeatureFusion(nn.Module):
    """The review's fusion block: 1x1 reduce each modality to ``channels``, concatenate, 1x1 fuse.

    As printed the block is linear. ``nonlinear`` (not the review's) follows each of the three
    1x1 convolutions with batch norm and ReLU, so that the head can compute what a linear map of
    the two pooled features cannot: the ablation that tells the fusion's function class from its
    training."""

    def __init__(self, in_channels1: int, in_channels2: int, channels: int = 256, *, nonlinear: bool = False):
        super().__init__()

        def conv(cin: int) -> nn.Module:
            layer = nn.Conv2d(cin, channels, kernel_size=1)
            return nn.Sequential(layer, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)) if nonlinear else layer

        self.conv1 = conv(in_channels1)
        self.conv2 = conv(in_channels2)
        self.fusion = conv(2 * channels)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if x1.shape[0] != x2.shape[0] or x1.shape[2:] != x2.shape[2:]:
            raise ValueError(f"cannot fuse feature maps of shapes {tuple(x1.shape)} and {tuple(x2.shape)}: "
                             "batch size and spatial size must match")
        x1 = self.conv1(x1)
        x2 = self.conv2(x2)
        x = torch.cat([x1, x2], dim=1)
        return self.fusion(x)


class MMFFNet(nn.Module):
    """Two inputs ``(x1, x2)``, one per modality, through ResNet50 and the fusion block."""

    num_inputs = 2

    def __init__(self, backbone: str = "resnet50", num_classes: int = 10, in_chans: int = 1, *,
                 shared: bool = True, fusion: Literal["mid", "late"] = "mid", channels: int = 256,
                 nonlinear: bool = False, backbone_pretrained_path: str | os.PathLike | None = None, **backbone_kwargs):
        super().__init__()
        if fusion not in ("mid", "late"):
            raise ValueError(f"fusion must be 'mid' (the review's M-MFF block) or 'late', got {fusion!r}")
        if nonlinear and fusion != "mid":
            raise ValueError("nonlinear applies to the mid-level fusion block (fusion: mid) only")
        self.in_chans, self.shared, self.fusion_kind = in_chans, shared, fusion

        def make() -> nn.Module:
            net = timm.create_model(backbone, pretrained=False, in_chans=in_chans, num_classes=0, global_pool="",
                                    **backbone_kwargs)
            if backbone_pretrained_path is not None:
                load_pretrained(net, backbone_pretrained_path, exclude=("fc.",))
            return net

        self.backbones = nn.ModuleList([make()] if shared else [make(), make()])
        width = self.backbones[0].num_features
        if fusion == "mid":
            self.mmff = MultiModalFeatureFusion(width, width, channels, nonlinear=nonlinear)
            self.fc = nn.Linear(channels, num_classes)
        else:
            self.heads = nn.ModuleList([nn.Linear(width, num_classes), nn.Linear(width, num_classes)])

    def _check(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        problems = []
        if x1.shape[0] != x2.shape[0]:
            problems.append(f"batch sizes differ ({x1.shape[0]} vs {x2.shape[0]})")
        for name, x in (("x1", x1), ("x2", x2)):
            if x.dim() != 4 or x.shape[1] != self.in_chans:
                problems.append(f"{name} has shape {tuple(x.shape)}, expected (N, {self.in_chans}, H, W)")
        if problems:
            raise ValueError("M-MFFnet needs two aligned inputs of one sample each: " + "; ".join(problems))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        self._check(x1, x2)
        f1 = self.backbones[0].forward_features(x1)
        f2 = self.backbones[-1].forward_features(x2)
        if self.fusion_kind == "late":
            return (self.heads[0](f1.mean(dim=(2, 3))) + self.heads[1](f2.mean(dim=(2, 3)))) / 2
        x = self.mmff(f1, f2)
        x = x.mean(dim=(2, 3))  # the figure's resnet.avgpool (adaptive, to 1x1)
        x = torch.flatten(x, 1)
        return self.fc(x)


@register_model("mmff_resnet50")
def mmff_resnet50(num_classes: int = 10, in_chans: int = 1, **kwargs) -> MMFFNet:
    """M-MFFnet on ResNet50 (``shared``, ``fusion``, ``channels``, ``nonlinear``, ``backbone_pretrained_path``)."""
    kwargs.setdefault("backbone", "resnet50")
    return MMFFNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
