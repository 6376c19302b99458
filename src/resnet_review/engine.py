"""The one training loop every technique uses.

:func:`fit` trains a model on in-memory :class:`~resnet_review.data.TensorData`: SGD or AdamW
(timm's optimiser factory, no weight decay on norms and biases), linear warm-up then cosine decay
per step, label smoothing, bf16 autocast and channels-last on CUDA, optional ``torch.compile``,
an atomic checkpoint after every epoch that :func:`fit` resumes from, and a guard that stops on a
non-finite loss while keeping the last good checkpoint.  Techniques plug in through hooks rather
than copies of the loop:

- ``loss_fn(logits, targets, inputs) -> loss`` — e.g. distillation adds a teacher term;
- ``batch_transform(inputs, targets) -> (inputs, targets)`` — e.g. mixup returns soft targets;
- ``on_epoch_end(epoch, metrics) -> bool`` — return True to stop (or raise, e.g. Optuna's
  ``TrialPruned``);
- models with several inputs receive ``model(*inputs)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm.optim
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import Recipe
from .data import TensorData
from .evaluate import metrics_from_logits, predict
from .storage import atomic_save

LossFn = Callable[[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]], torch.Tensor]
BatchTransform = Callable[[tuple[torch.Tensor, ...], torch.Tensor], tuple[tuple[torch.Tensor, ...], torch.Tensor]]
EpochCallback = Callable[[int, dict[str, float]], bool | None]
EpochLogger = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- devices
def resolve_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
    return torch.device(preference)


@dataclass(frozen=True)
class Accel:
    """How a device is used: bf16 autocast and channels-last pay off on CUDA, not on this CPU."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    compile: bool = False

    @classmethod
    def for_device(cls, device: str | torch.device = "auto", compile: bool = False) -> "Accel":
        device = resolve_device(device) if isinstance(device, str) else device
        cuda = device.type == "cuda"
        return cls(device, torch.bfloat16 if cuda else None, cuda, compile)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


# --------------------------------------------------------------------------- schedule
def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """timm's factory: no weight decay on norm and bias parameters."""
    kwargs = {"momentum": recipe.momentum, "nesterov": recipe.nesterov} if recipe.optimizer == "sgd" else {}
    return timm.optim.create_optimizer_v2(model, opt=recipe.optimizer, lr=recipe.lr,
                                          weight_decay=recipe.weight_decay, **kwargs)


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    """The default loss; accepts hard labels or (mixed) class probabilities."""

    def loss(logits: torch.Tensor, targets: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)

    return loss


# --------------------------------------------------------------------------- checkpoints
def run_fingerprint(model: nn.Module, recipe: Recipe, **settings) -> str:
    """Identifies a training run, so a checkpoint of another configuration is never resumed."""
    blob = json.dumps({"model": repr(model), "recipe": recipe.model_dump(), **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class FitResult:
    history: list[dict[str, float]]
    train_time_s: float
    images_per_s: float
    epochs_completed: int
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    checkpoint_path: Path | None = None

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


@dataclass
class _Progress:
    """Running sums of one epoch, kept on the device to avoid a sync per step."""

    device: torch.device
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    seen: int = 0

    def __post_init__(self):
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        n = len(logits)
        hard = targets.argmax(1) if targets.dim() > 1 else targets
        self.loss_sum += loss.detach().float() * n
        self.correct += logits.detach().argmax(1).eq(hard).sum()
        self.seen += n


def fit(model: nn.Module, train: TensorData, val: TensorData | None, *, recipe: Recipe, epochs: int,
        batch_size: int, seed: int = 0, accel: Accel | None = None, loss_fn: LossFn | None = None,
        batch_transform: BatchTransform | None = None, on_epoch_end: EpochCallback | None = None,
        log_epoch: EpochLogger | None = None, checkpoint_path: str | os.PathLike | None = None,
        resume: bool = True, checkpoint_every_s: float = 0.0, eval_batch_size: int = 256, val_every_images: int = 0,
        nan_check_every: int = 20, progress: bool | None = None, desc: str = "train") -> FitResult:
    """Train ``model`` in place for ``epochs`` epochs and return the per-epoch history.

    With ``checkpoint_path``, the full training state is written atomically after an epoch (after
    every one, or with ``checkpoint_every_s`` only once that many seconds have passed since the
    last write: a ResNet50's state is ~180 MB, longer to write than a short epoch) and, when
    ``resume`` is true and the file belongs to the same configuration, training continues from it.
    ``val`` is evaluated after every epoch, or with ``val_every_images`` only once that many
    training images have passed since the last evaluation, and always after the last epoch: the
    training itself is the same either way. ``progress=None`` shows a tqdm bar only on a terminal.
    """
    if epochs <= 0 or batch_size <= 0:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if len(train) < 2:
        raise ValueError(f"training set '{train.name}' has {len(train)} rows; need at least 2")
    accel = accel or Accel.for_device("auto")
    device = accel.device
    train = train.to(device)
    val = val.to(device) if val is not None else None
    model.to(device)
    if accel.channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if accel.compile else model
    loss_fn = loss_fn or cross_entropy_loss(recipe.label_smoothing)

    batch_size = min(batch_size, len(train))
    steps_per_epoch = len(train) // batch_size  # drop the ragged last batch: BN needs > 1 row
    total_steps = steps_per_epoch * epochs
    optimizer = make_optimizer(model, recipe)
    warmup_steps = round(recipe.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, recipe.min_lr_ratio))
    generator = torch.Generator(device=device).manual_seed(seed)

    checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
    fingerprint = run_fingerprint(model, recipe, epochs=epochs, batch_size=batch_size, seed=seed,
                                  n_train=len(train), train=train.name)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if checkpoint_path and resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["rng"]["generator"].cpu())
            torch.set_rng_state(state["rng"]["torch"].cpu())
            if device.type == "cuda" and "cuda" in state["rng"]:
                torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
            history, start_epoch = list(state["history"]), int(state["epoch"])
            print(f"[{desc}] resuming from {checkpoint_path} after epoch {start_epoch}/{epochs}", file=sys.stderr)
            for past in history if log_epoch is not None else ():
                log_epoch(int(past["epoch"]), past)  # the logger sees the whole run, not just its tail
        else:
            print(f"[{desc}] {checkpoint_path} belongs to another configuration; starting afresh", file=sys.stderr)

    show = sys.stderr.isatty() if progress is None else progress
    train_time = sum(h["epoch_time_s"] for h in history)
    images = sum(h["images"] for h in history)
    stopped = False
    last_write, written_epoch = time.perf_counter(), start_epoch
    unvalidated = 0  # training images since the last validation (a resumed run restarts the count)
    for epoch in range(start_epoch, epochs):
        model.train()
        running = _Progress(device)
        order = torch.randperm(len(train), generator=generator, device=device)
        synchronize(device)
        t0 = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{epochs}", disable=not show, leave=False)
        for step in bar:
            index = order[step * batch_size:(step + 1) * batch_size]
            inputs = tuple(x[index] for x in train.inputs)
            targets = train.targets[index]
            if batch_transform is not None:
                inputs, targets = batch_transform(inputs, targets)
            if accel.channels_last:
                inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
            with torch.autocast(device.type, dtype=accel.amp_dtype, enabled=accel.amp_dtype is not None):
                logits = step_model(*inputs)
                loss = loss_fn(logits.float(), targets, inputs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            running.add(loss, logits, targets)
            if (step + 1) % nan_check_every == 0 or step + 1 == steps_per_epoch:
                _check_finite(running.loss_sum, epoch, step, recipe, checkpoint_path, written_epoch)
                if show:
                    bar.set_postfix(loss=f"{running.loss_sum.item() / running.seen:.3f}")
        synchronize(device)
        epoch_time = time.perf_counter() - t0
        metrics = {
            "epoch": epoch + 1,
            "train_loss": running.loss_sum.item() / running.seen,
            "train_acc": running.correct.item() / running.seen,
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": running.seen / epoch_time,
            "epoch_time_s": epoch_time,
            "images": running.seen,
        }
        unvalidated += running.seen
        if val is not None and (epoch + 1 == epochs or unvalidated >= val_every_images):
            unvalidated = 0
            logits = predict(model, val, eval_batch_size, amp_dtype=accel.amp_dtype, channels_last=accel.channels_last)
            result = metrics_from_logits(logits, val.targets, bootstrap_resamples=0)
            metrics |= {"val_loss": result.loss, "val_acc": result.accuracy}
        history.append(metrics)
        train_time += epoch_time
        images += running.seen
        if checkpoint_path and time.perf_counter() - last_write >= checkpoint_every_s:
            last_write, written_epoch = time.perf_counter(), epoch + 1
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                         "fingerprint": fingerprint, "rng": _rng_state(generator, device)}, checkpoint_path)
        if log_epoch is not None:
            log_epoch(epoch + 1, metrics)
        print(f"[{desc}] epoch {epoch + 1}/{epochs} " + " ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("epoch", "images")), file=sys.stderr)
        if on_epoch_end is not None and on_epoch_end(epoch + 1, metrics):
            stopped = True
            break
    return FitResult(history, train_time, images / train_time if train_time else float("nan"), len(history),
                     stopped, start_epoch, checkpoint_path)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so that wall-clock timings are true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int, recipe: Recipe,
                  checkpoint_path: Path | None, checkpoint_epoch: int) -> None:
    if torch.isfinite(loss_sum):
        return
    kept = (f"the last good checkpoint ({checkpoint_path}, after epoch {checkpoint_epoch}) is kept"
            if checkpoint_path and checkpoint_path.is_file() and checkpoint_epoch > 0 else "no checkpoint was written")
    raise NonFiniteLossError(
        f"training loss became {loss_sum.item()} in epoch {epoch + 1} by step {step + 1}; {kept}. "
        f"Lower the learning rate (lr={recipe.lr}) or set grad_clip_norm.")
