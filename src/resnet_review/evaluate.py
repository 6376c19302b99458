"""The one evaluator: accuracy, macro-F1, per-class accuracy, confusion matrix, calibration."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .data import TensorData
from .stats import bootstrap_ci


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = 256, *, amp_dtype: torch.dtype | None = None,
            channels_last: bool = False) -> torch.Tensor:
    """Logits of ``model`` on every row of ``data`` (in order), as float32 on the data's device."""
    was_training = model.training
    model.eval()
    device = data.device
    outputs = []
    try:
        for start in range(0, len(data), batch_size):
            inputs = [x[start:start + batch_size] for x in data.inputs]
            if channels_last:
                inputs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs.append(model(*inputs).float())
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, data.num_classes, device=device)


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al., 2017)."""
    confidence, predicted = probs.max(1)
    correct = predicted.eq(targets).float()
    edges = torch.linspace(0, 1, bins + 1, device=probs.device)
    ece = torch.zeros((), device=probs.device)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
    return float(ece)


@dataclass
class EvalResult:
    accuracy: float
    macro_f1: float
    loss: float
    ece: float
    accuracy_ci: tuple[float, float]
    per_class_accuracy: list[float]
    confusion: np.ndarray = field(repr=False)
    classes: tuple[str, ...] = ()
    predicted: np.ndarray | None = field(default=None, repr=False)  # class index per example
    targets: np.ndarray | None = field(default=None, repr=False)

    def scalars(self) -> dict[str, float]:
        """The single-number metrics, as logged to dvclive."""
        return {"acc": self.accuracy, "macro_f1": self.macro_f1, "loss": self.loss, "ece": self.ece,
                "acc_boot_low": self.accuracy_ci[0], "acc_boot_high": self.accuracy_ci[1]}


def metrics_from_logits(logits: torch.Tensor, targets: torch.Tensor, classes: tuple[str, ...] = (),
                        bootstrap_resamples: int = 1000, seed: int = 0) -> EvalResult:
    num_classes = logits.shape[1]
    targets = targets.to(logits.device)
    loss = float(nn.functional.cross_entropy(logits, targets)) if len(targets) else float("nan")
    predicted = logits.argmax(1)
    confusion = torch.bincount(targets * num_classes + predicted, minlength=num_classes ** 2)
    confusion = confusion.reshape(num_classes, num_classes).cpu().numpy()  # rows: true, cols: predicted
    tp = np.diag(confusion).astype(float)
    support, predicted_count = confusion.sum(1), confusion.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support + predicted_count > 0, 2 * tp / (support + predicted_count), 0.0)
    present = support > 0
    correct = predicted.eq(targets).cpu().numpy()
    return EvalResult(
        accuracy=float(correct.mean()) if correct.size else float("nan"),
        macro_f1=float(f1[present].mean()) if present.any() else float("nan"),
        loss=loss,
        ece=expected_calibration_error(logits.softmax(1), targets),
        accuracy_ci=bootstrap_ci(correct, bootstrap_resamples, seed=seed),
        per_class_accuracy=[float(a) for a in per_class],
        confusion=confusion,
        classes=tuple(classes),
        predicted=predicted.cpu().numpy(),
        targets=targets.cpu().numpy(),
    )


def evaluate(model: nn.Module, data: TensorData, batch_size: int = 256, *, bootstrap_resamples: int = 1000,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> EvalResult:
    """Every metric the project reports for one trained model on one labelled dataset."""
    logits = predict(model, data, batch_size, amp_dtype=amp_dtype, channels_last=channels_last)
    return metrics_from_logits(logits, data.targets, data.classes, bootstrap_resamples)
