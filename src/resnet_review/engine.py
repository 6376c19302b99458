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

import contextlib
import hashlib
import inspect
import json
import math
import os
import pickle
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm.optim
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .config import Recipe
from .data import TensorData
from .distributed import World
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
def model_settings(model: nn.Module) -> dict[str, dict[str, object]]:
    """The plain settings each module keeps beside its layers, which ``repr`` leaves out (e.g. a
    timm ResNet's ``drop_rate``, applied in ``forward``)."""
    out = {}
    for name, module in model.named_modules():
        plain = {k: v for k, v in vars(module).items()
                 if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str))}
        if plain:
            out[name] = plain
    return out


def run_fingerprint(model: nn.Module, recipe: Recipe, **settings) -> str:
    """Identifies a training run, so a checkpoint of another configuration is never resumed."""
    blob = json.dumps({"model": repr(model), "model_settings": model_settings(model), "recipe": recipe.model_dump(),
                       **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_digest(data: TensorData) -> str:
    """What the training data holds: its labels, input shapes and every image's pixel sum, so that
    another size, view, share or draw of the images is another run (cheap on the device)."""
    digest = hashlib.sha256(data.targets.detach().cpu().numpy().tobytes())
    for x in data.inputs:
        digest.update(repr(tuple(x.shape)).encode())
        digest.update(x.detach().flatten(1).double().sum(1).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def state_digest(module: nn.Module) -> str:
    """What a model's weights are: a hash of every tensor of its state (a ResNet50's in ~0.2 s)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            # a copy: NumPy's view would make the model's own storage non-resizable (observers resize theirs)
            copied = tensor.detach().to("cpu", copy=True).contiguous()
            digest.update(copied.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def describe_hook(hook: Callable | None, depth: int = 2, weights: bool = False) -> str | None:
    """A hook as far as it changes training: its name and the settings its closure holds (numbers,
    strings, nested hooks, a teacher's class), e.g. a distillation loss with its temperature;
    with ``weights``, a model it holds (a teacher) also by its :func:`state_digest`."""
    if hook is None:
        return None
    if isinstance(hook, (bool, int, float, str)):
        return repr(hook)
    if isinstance(hook, nn.Module):
        return type(hook).__name__ + (f"@{state_digest(hook)}" if weights else "")
    if isinstance(hook, (list, tuple)):
        return "[" + ", ".join(str(describe_hook(h, depth, weights)) for h in hook) + "]"
    name = getattr(hook, "__qualname__", type(hook).__qualname__)
    cells = getattr(hook, "__closure__", None) or ()
    if depth <= 0 or not cells:
        return name
    inner = []
    for cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        # functions and plain settings; callable objects that keep state (a lazily built
        # RandomErasing) would make the same run look different once it has trained a step
        if inspect.isfunction(value) or isinstance(value, (bool, int, float, str, list, tuple, nn.Module)):
            inner.append(str(describe_hook(value, depth - 1, weights)))
    return f"{name}({', '.join(inner)})"


def training_fingerprint(run: "Run", recipe: Recipe, epochs: int, batch_size: int, *, weights: bool = False) -> str:
    """What a run trains, from what, and how (its model, recipe, epochs, batch, seed, data and
    hooks); with ``weights`` also the model's starting weights and a teacher's (a model built from
    another stage's trained weights is another run once those are retrained)."""
    settings = {"init": state_digest(run.model)} if weights else {}
    return run_fingerprint(run.model, recipe, epochs=epochs, batch_size=min(batch_size, len(run.train)),
                           seed=run.seed, n_train=len(run.train), train=run.train.name, data=data_digest(run.train),
                           hooks=[describe_hook(run.loss_fn, weights=weights),
                                  describe_hook(run.batch_transform, weights=weights)], **settings)


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


@dataclass
class Run:
    """One model of a :func:`fit_group`: what differs between the runs trained side by side (its
    model, seed, data, hooks, checkpoint and name); the recipe, epochs and batch size are shared."""

    model: nn.Module
    train: TensorData
    val: TensorData | None = None
    seed: int = 0
    loss_fn: LossFn | None = None
    batch_transform: BatchTransform | None = None
    on_epoch_end: EpochCallback | None = None
    log_epoch: EpochLogger | None = None
    checkpoint_path: str | os.PathLike | None = None
    desc: str = "train"
    # the global random state the run trains from, captured when its model was built (see
    # RngState); default: the state when fit_group starts
    rng: "RngState | None" = None


class ChunkDeadline(RuntimeError):
    """A run stopped at the end of an epoch because the time of its chunk was up; its resume
    checkpoint holds every finished epoch, so running it again continues where it stopped."""


class RngState:
    """The global random states (Python, NumPy, torch CPU and CUDA) of one run of a group, swapped
    in around each of its steps, so that dropout, drop-path and augmentations draw for each run
    the numbers they would draw if it trained alone. ``RngState(device)`` captures the current
    state: take it right after seeding and building the run's model."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.state = self._capture()

    def _capture(self):
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda

    def __enter__(self):
        python, numpy_state, cpu, cuda = self.state
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)

    def __exit__(self, *exc):
        self.state = self._capture()


class _Trainer:
    """The state of one run of :func:`fit_group`: its model, optimiser, schedule, shuffling
    generator, history and checkpoint; each method is one named step of the epoch loop."""

    def __init__(self, run: Run, *, recipe: Recipe, epochs: int, batch_size: int, accel: Accel,
                 resume: bool):
        if len(run.train) < 2:
            raise ValueError(f"training set '{run.train.name}' has {len(run.train)} rows; need at least 2")
        device = accel.device
        self.run, self.accel, self.recipe, self.epochs, self.device = run, accel, recipe, epochs, device
        self.desc = run.desc
        self.train = run.train.to(device)
        self.val = run.val.to(device) if run.val is not None else None
        model = run.model.to(device)
        if accel.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        # with dynamo's default of inlining nn.Modules the parameters are graph inputs, so models of one
        # architecture in a process reuse the first one's compiled graph instead of compiling again
        self.step_model = torch.compile(model) if accel.compile else model
        self.loss_fn = run.loss_fn or cross_entropy_loss(recipe.label_smoothing)
        self.batch_size = min(batch_size, len(self.train))
        self.steps_per_epoch = len(self.train) // self.batch_size  # drop the ragged last batch: BN needs > 1 row
        total_steps = self.steps_per_epoch * epochs
        self.optimizer = make_optimizer(model, recipe)
        warmup_steps = round(recipe.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, recipe.min_lr_ratio))
        self.generator = torch.Generator(device=device).manual_seed(run.seed)
        self.checkpoint_path = Path(run.checkpoint_path) if run.checkpoint_path else None
        # only a checkpointed run needs it (the data digest reads the images back from the device)
        self.fingerprint = training_fingerprint(run, recipe, epochs, batch_size) if self.checkpoint_path else None
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.world = World.from_env()  # None outside torchrun: one process, as always
        if self.checkpoint_path and resume and self.checkpoint_path.is_file():
            self._resume()
        if self.world is not None:
            self._distribute()
        self.epoch = self.start_epoch
        self.stopped = False
        self.last_write, self.written_epoch = time.perf_counter(), self.start_epoch
        self.unvalidated = 0  # training images since the last validation (a resumed run restarts the count)

    def _distribute(self) -> None:
        """Train as one rank of a data-parallel job: DDP averages the ranks' gradients after
        each backward pass; each rank trains on its share of every global batch (see :meth:`step`)."""
        world = self.world
        world.rank_batch(self.batch_size)  # refuses a batch the ranks cannot share evenly
        world.check_same("the epoch they resume from (the checkpoint must be on a file system every rank "
                         "reads)", self.start_epoch)
        if self.device.type == "cuda":
            # statistics of the global batch, as one process computes them (PyTorch has no
            # SyncBatchNorm on the CPU); the parameters stay the same objects, so the optimiser
            # still holds them, and in eval mode the converted layers act as plain batch norm
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        ddp = DistributedDataParallel(self.model, device_ids=[torch.cuda.current_device()]
                                      if self.device.type == "cuda" else None)
        self.step_model = torch.compile(ddp) if self.accel.compile else ddp

    @property
    def _leads(self) -> bool:
        """This process writes the run's logs and files: the only one, or rank 0 of a DDP job."""
        return self.world is None or self.world.leader

    @property
    def done(self) -> bool:
        return self.stopped or self.epoch >= self.epochs

    def _resume(self) -> None:
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
            # a truncated or damaged file (a kill mid-write of an older version, a full disk)
            print(f"[{self.desc}] resume checkpoint {self.checkpoint_path} is unreadable "
                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                  "discarding it and starting afresh", file=sys.stderr)
            self.checkpoint_path.unlink(missing_ok=True)
            return
        if state.get("fingerprint") != self.fingerprint:
            print(f"[{self.desc}] {self.checkpoint_path} belongs to another configuration; starting afresh",
                  file=sys.stderr)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["rng"]["generator"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
        self.history, self.start_epoch = list(state["history"]), int(state["epoch"])
        print(f"[{self.desc}] resuming from {self.checkpoint_path} after epoch {self.start_epoch}/{self.epochs}",
              file=sys.stderr)
        for past in self.history if self.run.log_epoch is not None and self._leads else ():
            self.run.log_epoch(int(past["epoch"]), past)  # the logger sees the whole run, not just its tail

    def begin_epoch(self) -> None:
        self.model.train()
        self.running = _Progress(self.device)
        self.order = torch.randperm(len(self.train), generator=self.generator, device=self.device)

    def step(self, step: int) -> None:
        """One optimiser step on the ``step``-th batch of this epoch's order; no host sync."""
        index = self.order[step * self.batch_size:(step + 1) * self.batch_size]
        if self.world is not None:
            index = self.world.shard(index)  # every rank drew the same order: the shares make up the batch
        inputs = tuple(x[index] for x in self.train.inputs)
        targets = self.train.targets[index]
        if self.run.batch_transform is not None:
            inputs, targets = self.run.batch_transform(inputs, targets)
        if self.accel.channels_last:
            inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
        with torch.autocast(self.device.type, dtype=self.accel.amp_dtype, enabled=self.accel.amp_dtype is not None):
            logits = self.step_model(*inputs)
            loss = self.loss_fn(logits.float(), targets, inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.grad_clip_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.running.add(loss, logits, targets)

    def check_finite(self, epoch: int, step: int) -> None:
        # under DDP every rank checks the sum of all shares, so all stop at the same step
        loss_sum = self.running.loss_sum if self.world is None else self.world.sum(self.running.loss_sum)
        _check_finite(loss_sum, epoch, step, self.recipe, self.checkpoint_path, self.written_epoch,
                      self.desc)

    def end_epoch(self, epoch_time: float, *, eval_batch_size: int, val_every_images: int,
                  checkpoint_every_s: float, checkpoint_last: bool) -> None:
        """Epoch metrics, validation when due, the resume checkpoint, logging and the stop hook."""
        running, epoch, world = self.running, self.epoch, self.world
        loss_sum, correct, seen = running.loss_sum, running.correct, running.seen
        if world is not None:  # the epoch's figures over every rank's share
            loss_sum, correct, seen = world.sum(loss_sum), world.sum(correct), seen * world.size
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": seen / epoch_time,
            "epoch_time_s": epoch_time,
            "images": seen,
        }
        self.unvalidated += seen
        if self.val is not None and (epoch + 1 == self.epochs or self.unvalidated >= val_every_images):
            self.unvalidated = 0
            if self._leads:
                logits = predict(self.model, self.val, eval_batch_size, amp_dtype=self.accel.amp_dtype,
                                 channels_last=self.accel.channels_last)
                result = metrics_from_logits(logits, self.val.targets, bootstrap_resamples=0)
                metrics |= {"val_loss": result.loss, "val_acc": result.accuracy}
        if world is not None:  # every rank's history is rank 0's (its model, batch-norm statistics, is the one written)
            metrics = world.leaders(metrics)
        self.history.append(metrics)
        self.epoch = epoch + 1
        last = self.epoch == self.epochs
        if time.perf_counter() - self.last_write >= checkpoint_every_s or (checkpoint_last and last):
            self.write_checkpoint()
        if self._leads:
            if self.run.log_epoch is not None:
                self.run.log_epoch(epoch + 1, metrics)
            print(f"[{self.desc}] epoch {epoch + 1}/{self.epochs} " + " ".join(
                f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("epoch", "images")), file=sys.stderr)
        if self._stop_requested(epoch + 1, metrics):
            self.stopped = True

    def _stop_requested(self, epoch: int, metrics: dict[str, float]) -> bool:
        """The ``on_epoch_end`` hook's answer; under DDP the hook runs on rank 0 only (an Optuna
        trial hears each epoch once) and its answer, or the exception it raised, reaches every rank."""
        hook = self.run.on_epoch_end
        if hook is None:
            return False
        if self.world is None:
            return bool(hook(epoch, metrics))
        outcome = None
        if self.world.leader:
            try:
                outcome = bool(hook(epoch, metrics))
            except Exception as err:  # re-raised on every rank below
                outcome = err
        outcome = self.world.leaders(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def write_checkpoint(self) -> None:
        if not self.checkpoint_path or self.written_epoch == self.epoch:
            return
        self.last_write, self.written_epoch = time.perf_counter(), self.epoch
        if not self._leads:
            return  # the ranks hold the same state; rank 0 writes it
        atomic_save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "history": self.history,
                     "fingerprint": self.fingerprint, "rng": _rng_state(self.generator, self.device)},
                    self.checkpoint_path)

    def result(self) -> FitResult:
        train_time = sum(h["epoch_time_s"] for h in self.history)
        images = sum(h["images"] for h in self.history)
        return FitResult(self.history, train_time, images / train_time if train_time else float("nan"),
                         len(self.history), self.stopped, self.start_epoch, self.checkpoint_path)


def fit(model: nn.Module, train: TensorData, val: TensorData | None, *, recipe: Recipe, epochs: int,
        batch_size: int, seed: int = 0, accel: Accel | None = None, loss_fn: LossFn | None = None,
        batch_transform: BatchTransform | None = None, on_epoch_end: EpochCallback | None = None,
        log_epoch: EpochLogger | None = None, checkpoint_path: str | os.PathLike | None = None,
        desc: str = "train", **settings) -> FitResult:
    """Train ``model`` in place for ``epochs`` epochs and return the per-epoch history: a
    :func:`fit_group` of one run (``settings`` are that function's keyword arguments)."""
    run = Run(model, train, val, seed=seed, loss_fn=loss_fn, batch_transform=batch_transform,
              on_epoch_end=on_epoch_end, log_epoch=log_epoch, checkpoint_path=checkpoint_path, desc=desc)
    return fit_group([run], recipe=recipe, epochs=epochs, batch_size=batch_size, accel=accel, **settings)[0]


def fit_group(runs: Sequence[Run], *, recipe: Recipe, epochs: int, batch_size: int, accel: Accel | None = None,
              resume: bool = True, checkpoint_every_s: float = 0.0, checkpoint_last: bool = False,
              eval_batch_size: int = 256, val_every_images: int = 0, nan_check_every: int = 20,
              deadline: float | None = None, progress: bool | None = None) -> list[FitResult]:
    """Train several models side by side, step by step, each on a CUDA stream of its own, and
    return each one's :class:`FitResult`; each run's numbers are those it would get alone.

    On a GPU the runs' kernels overlap (a ResNet50 step at 64 px leaves most of an H200 idle) and
    nothing waits for the device within an epoch unless ``nan_check_every`` asks (0: check the
    loss once per epoch). Random draws (shuffling, dropout, augmentations) come from each run's
    own generators, swapped in around its steps.

    With a run's ``checkpoint_path``, its full training state is written atomically after an
    epoch (after every one, or with ``checkpoint_every_s`` only once that many seconds have passed
    since the last write: a ResNet50's state is ~180 MB, longer to write than a short epoch; with
    ``checkpoint_last`` always after the last one, so a finished run is never trained again) and,
    when ``resume`` is true and the file belongs to the same configuration, training continues
    from it. ``val`` is evaluated after every epoch, or with ``val_every_images`` only once that
    many training images have passed since the last evaluation, and always after the last epoch:
    the training itself is the same either way. With ``deadline`` (a ``time.time()``), no epoch
    starts that the last epoch's duration says would end after it: the checkpoints are written and
    :class:`ChunkDeadline` is raised. ``progress=None`` shows a tqdm bar only on a terminal.
    """
    if epochs <= 0 or batch_size <= 0:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if not runs:
        return []
    accel = accel or Accel.for_device("auto")
    device = accel.device
    alone = len(runs) == 1
    slots = [contextlib.nullcontext() if alone else (run.rng or RngState(device)) for run in runs]
    trainers = []
    for run, slot in zip(runs, slots):
        with slot:  # a resumed run restores its random state into its own slot
            trainers.append(_Trainer(run, recipe=recipe, epochs=epochs, batch_size=batch_size, accel=accel,
                                     resume=resume))
    for t in trainers[1:] if not alone else ():
        if t.steps_per_epoch != trainers[0].steps_per_epoch:
            raise ValueError(f"runs trained side by side need the same steps per epoch; '{t.desc}' has "
                             f"{t.steps_per_epoch}, '{trainers[0].desc}' {trainers[0].steps_per_epoch}")
    streams = [torch.cuda.Stream(device) if device.type == "cuda" and not alone else None for _ in trainers]
    show = sys.stderr.isatty() if progress is None else progress
    world = trainers[0].world
    steps_per_epoch = trainers[0].steps_per_epoch
    last_epoch_s = 0.0
    while True:
        active = [i for i, t in enumerate(trainers) if not t.done]
        if not active:
            break
        if deadline is not None and _agreed(world, time.time() + last_epoch_s > deadline):
            for t in trainers:
                t.write_checkpoint()
            raise ChunkDeadline(", ".join(f"{t.desc} stopped after epoch {t.epoch}/{epochs}" for t in trainers
                                          if not t.done) + "; the chunk's time is up, run again to continue")
        epoch = min(trainers[i].epoch for i in active)
        active = [i for i in active if trainers[i].epoch == epoch]  # a resumed run waits for the others
        for i in active:
            with slots[i], _on(streams[i]):
                trainers[i].begin_epoch()
        synchronize(device)
        t0 = time.perf_counter()
        desc = trainers[active[0]].desc if len(active) == 1 else f"{len(active)} runs"
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{epochs}", disable=not show, leave=False)
        for step in bar:
            for i in active:
                with slots[i], _on(streams[i]):
                    trainers[i].step(step)
            if (nan_check_every and (step + 1) % nan_check_every == 0) or step + 1 == steps_per_epoch:
                synchronize(device)
                for i in active:
                    trainers[i].check_finite(epoch, step)
                if show and alone:
                    running = trainers[0].running
                    bar.set_postfix(loss=f"{running.loss_sum.item() / running.seen:.3f}")
        synchronize(device)
        last_epoch_s = time.perf_counter() - t0
        for i in active:
            trainers[i].end_epoch(last_epoch_s, eval_batch_size=eval_batch_size, val_every_images=val_every_images,
                                  checkpoint_every_s=checkpoint_every_s, checkpoint_last=checkpoint_last)
    return [t.result() for t in trainers]


def _agreed(world: World | None, decision: bool) -> bool:
    """``decision``, or under DDP rank 0's, so that no rank stops at a clock the others do not."""
    return decision if world is None else world.leaders(decision)


def _on(stream: "torch.cuda.Stream | None"):
    """Queue the work that follows on ``stream`` (nothing to switch on the CPU)."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


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
                  checkpoint_path: Path | None, checkpoint_epoch: int, desc: str = "train") -> None:
    if torch.isfinite(loss_sum):
        return
    kept = (f"the last good checkpoint ({checkpoint_path}, after epoch {checkpoint_epoch}) is kept"
            if checkpoint_path and checkpoint_path.is_file() and checkpoint_epoch > 0 else "no checkpoint was written")
    raise NonFiniteLossError(
        f"[{desc}] training loss became {loss_sum.item()} in epoch {epoch + 1} by step {step + 1}; {kept}. "
        f"Lower the learning rate (lr={recipe.lr}) or set grad_clip_norm.")
