"""HFF-SEnet: the review's Hierarchical Feature Fusion Squeeze-and-Excitation network (II.H.1).

The review describes it in words and figures 7–10 (whose code is an image): a ResNet50 trunk;
after each of its four layers an *HFF module* — ``conv1``, a 1x1 convolution reducing the
channels; ``conv2``, a 3x3 convolution extracting features; an attention branch, "a sequence of
convolution and activation functions" computing channel weights — then average pooling,
flattening and a fully connected layer.  The text leaves open how the levels are fused and where
the attention output goes.  The readings chosen here, each a parameter:

* **Side branches, not an altered trunk.**  The HFF modules read the output of each ResNet
  layer; the trunk itself stays the standard ResNet50 (so the comparison with the baseline
  isolates what HFF adds).  Which layers get a module is ``levels`` (``(4,)``: last layer only).
* **Attention re-weights the module's features.**  The branch is squeeze-and-excitation
  (global average pool → 1x1 conv → ReLU → 1x1 conv → sigmoid, ``reduction`` as in SE), and its
  weights multiply the 3x3 features channel by channel — the "SE" of the name.
* **Hierarchical fusion is bottom-up** (``cross_level=True``): each level's reduced map is
  added to the previous level's HFF output, average-pooled to its resolution, before the 3x3
  convolution, so information of every lower level flows into every higher one.  With
  ``cross_level=False`` the modules work independently.
* **Every level reaches the classifier.**  Each module's output is average-pooled; the pooled
  vectors are concatenated and flattened into the fully connected layer.

``levels=(1, 2, 3, 4), cross_level=False`` is the control that isolates the cross-level fusion;
``levels=(4,)`` the one that isolates the hierarchy.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


def _conv_bn_act(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class HFFModule(nn.Module):
    """conv1 (1x1, reduce) → [+ previous level] → conv2 (3x3) → × channel attention."""

    def __init__(self, in_channels: int, channels: int = 256, reduction: int = 16):
        super().__init__()
        self.conv1 = _conv_bn_act(in_channels, channels, 1)
        self.conv2 = _conv_bn_act(channels, channels, 3)
        hidden = max(8, channels // reduction)
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv1(x)
        if previous is not None:
            x = x + F.adaptive_avg_pool2d(previous, x.shape[-2:])
        x = self.conv2(x)
        return x * self.attention(x)


class HFFSENet(nn.Module):
    def __init__(self, backbone: str = "resnet50", num_classes: int = 10, in_chans: int = 1,
                 levels: tuple[int, ...] = (1, 2, 3, 4), cross_level: bool = True, channels: int = 256,
                 reduction: int = 16, drop_rate: float = 0.0, **backbone_kwargs):
        super().__init__()
        levels = tuple(sorted(set(levels)))
        if not levels or not set(levels) <= {1, 2, 3, 4}:
            raise ValueError(f"levels must be a non-empty subset of (1, 2, 3, 4), got {levels}")
        self.levels, self.cross_level = levels, cross_level
        self.backbone = timm.create_model(backbone, pretrained=False, in_chans=in_chans, features_only=True,
                                          out_indices=levels, **backbone_kwargs)
        self.hff = nn.ModuleList(HFFModule(c, channels, reduction) for c in self.backbone.feature_info.channels())
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels * len(levels), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused, previous = [], None
        for module, feature in zip(self.hff, self.backbone(x)):
            previous = module(feature, previous if self.cross_level else None)
            fused.append(previous.mean(dim=(2, 3)))
        return self.fc(self.drop(torch.flatten(torch.cat(fused, dim=1), 1)))


@register_model("hff_senet")
def hff_senet(num_classes: int = 10, in_chans: int = 1, **kwargs) -> HFFSENet:
    """HFF-SEnet on a ResNet50 trunk (``backbone=`` another timm ResNet)."""
    kwargs.setdefault("backbone", "resnet50")
    return HFFSENet(num_classes=num_classes, in_chans=in_chans, **kwargs)
