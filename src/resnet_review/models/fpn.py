"""FPN-ResNet50: a classifier over every level of a feature pyramid.

The review's "FPN multi-scale fusion" for classification: the backbone's four stages
(``features_only``, strides 4–32) go through torchvision's :class:`FeaturePyramidNetwork`, which
adds each coarser level, up-sampled, to the finer one below it; each output level is
global-average-pooled and the pooled vectors are fused (concatenated or summed) before one linear
classifier.  ``levels=(4,)`` keeps the same head on the last stage alone, the control that
isolates what fusing the pyramid adds.

The pyramid's convolutions are batch-normalised by default (``fpn_norm=True``): without it the
summed lateral and top-down maps grow with the depth of the pyramid, and training from scratch
with the shared recipe (SGD, lr 0.1) diverged within the first epoch.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import timm
import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from .registry import register_model


class FPNClassifier(nn.Module):
    def __init__(self, backbone: str = "resnet50", num_classes: int = 10, in_chans: int = 1,
                 levels: tuple[int, ...] = (1, 2, 3, 4), fpn_channels: int = 256,
                 fusion: Literal["concat", "sum"] = "concat", drop_rate: float = 0.0, fpn_norm: bool = True,
                 **backbone_kwargs):
        super().__init__()
        levels = tuple(sorted(set(levels)))
        if not levels or not set(levels) <= {1, 2, 3, 4}:
            raise ValueError(f"levels must be a non-empty subset of (1, 2, 3, 4), got {levels}")
        if fusion not in ("concat", "sum"):
            raise ValueError(f"fusion must be 'concat' or 'sum', got {fusion!r}")
        self.levels, self.fusion = levels, fusion
        self.backbone = timm.create_model(backbone, pretrained=False, in_chans=in_chans, features_only=True,
                                          out_indices=levels, **backbone_kwargs)
        channels = self.backbone.feature_info.channels()
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, norm_layer=nn.BatchNorm2d if fpn_norm else None)
        self.drop = nn.Dropout(drop_rate)
        width = fpn_channels * (len(levels) if fusion == "concat" else 1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        pyramid = self.fpn(OrderedDict((str(level), f) for level, f in zip(self.levels, features)))
        pooled = [level.mean(dim=(2, 3)) for level in pyramid.values()]
        fused = torch.cat(pooled, dim=1) if self.fusion == "concat" else torch.stack(pooled).sum(0)
        return self.fc(self.drop(fused))


@register_model("fpn_resnet50")
def fpn_resnet50(num_classes: int = 10, in_chans: int = 1, **kwargs) -> FPNClassifier:
    return FPNClassifier("resnet50", num_classes=num_classes, in_chans=in_chans, **kwargs)
