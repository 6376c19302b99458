"""Finished training runs kept beside their weights, so that a stage run again trains only what changed.

DVC runs a stage's notebook again whenever one of its dependencies changes, the package among
them. Each seed a stage trains leaves its weights (``models/<stage>/<variant>/seed<k>.pt``; the
trained, not yet finalised, form as ``seed<k>.trained.pt`` where the stage finalises it, e.g.
int8 after quantisation-aware training) and a record, ``seed<k>.run.json``: the key of what
produced them and the training history. The key joins

* :func:`~resnet_review.engine.training_fingerprint` with weights: the model, recipe, epochs,
  batch, seed, training data and hooks, the model's starting weights (a model built from another
  stage's trained weights) and a teacher's weights;
* the device settings (device type, autocast dtype, channels-last) and the torch version;
* :func:`training_code_digest`: the package's source, except the modules that only read or show
  results (:data:`PRESENTATION`).

A run whose key matches its record loads the weights and history instead of training; the
evaluation, profiling and rendering run as before, and give the numbers the first run gave. So
changing a plot, the report or a claim re-renders the notebooks and retrains nothing, while
changing the engine, a model, the data or a param retrains what it touches.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from functools import cache
from pathlib import Path

import torch
from torch import nn

from .config import Recipe
from .engine import Accel, FitResult, Run, training_fingerprint
from .storage import atomic_save, atomic_write_text

# modules of the package that only read, measure or show results: changing one retrains nothing
PRESENTATION = ("plots.py", "report.py", "results.py", "runs.py", "presentation.py", "claims.py", "campaign.py")
PACKAGE = Path(__file__).resolve().parent


@cache
def training_code_digest(package: Path = PACKAGE) -> str:
    """A hash of every module of ``package`` that can change how a model trains: all but
    :data:`PRESENTATION` (top level)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.parent == package and path.name in PRESENTATION:
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class TrainedRuns:
    """The training runs a stage finished, under ``models_dir/<variant>/``."""

    def __init__(self, models_dir: Path, accel: Accel, label: str):
        self.models_dir, self.accel, self.label = Path(models_dir), accel, label

    def key(self, run: Run, recipe: Recipe, epochs: int, batch_size: int) -> str:
        """What identifies ``run``'s training: see the module's docstring."""
        device = {"device": self.accel.device.type, "amp": str(self.accel.amp_dtype),
                  "channels_last": self.accel.channels_last, "torch": torch.__version__}
        blob = json.dumps({"run": training_fingerprint(run, recipe, epochs, batch_size, weights=True),
                           "code": training_code_digest(), **device}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _files(self, variant: str, seed: int, finalized: bool) -> tuple[Path, Path]:
        folder = self.models_dir / variant
        weights = folder / (f"seed{seed}.trained.pt" if finalized else f"seed{seed}.pt")
        return weights, folder / f"seed{seed}.run.json"

    def load(self, variant: str, seed: int, model: nn.Module, key: str, *, finalized: bool) -> FitResult | None:
        """The recorded training of ``variant``/``seed`` with its weights loaded into ``model``, or
        None when there is none under ``key`` (never run, another configuration or code, a file
        unreadable): the run trains then."""
        weights, record = self._files(variant, seed, finalized)
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        if data.get("key") != key:
            return None
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            current = model.state_dict()
            if set(state) != set(current) or any(getattr(state[k], "shape", None) != getattr(v, "shape", None)
                                                 for k, v in current.items()):
                raise ValueError("its tensors are not the model's")
        except Exception as err:  # noqa: BLE001 -- missing, truncated or of another shape: train it again
            print(f"[{self.label}/{variant}/seed{seed}] {weights} does not load ({type(err).__name__}: {err}); "
                  "training it again", file=sys.stderr)
            return None
        model.load_state_dict(state)  # checked first: a failure never leaves the model half loaded
        print(f"[{self.label}/{variant}/seed{seed}] trained before with this configuration and code "
              f"({weights}): loaded, not retrained", file=sys.stderr)
        fit = data["fit"]
        return FitResult(history=fit["history"], train_time_s=fit["train_time_s"], images_per_s=fit["images_per_s"],
                         epochs_completed=fit["epochs_completed"], stopped_early=fit["stopped_early"])

    def keep_trainable(self, variant: str, seed: int, model: nn.Module) -> None:
        """Save the trained form of a model the stage finalises (its weights file holds the other)."""
        atomic_save(model.state_dict(), self._files(variant, seed, True)[0])

    def record(self, variant: str, seed: int, key: str, fit: FitResult, *, finalized: bool) -> None:
        """Write the record once the run's weights are saved: from now on ``key`` loads them."""
        fields = {k: v for k, v in asdict(fit).items() if k in ("history", "train_time_s", "images_per_s",
                                                               "epochs_completed", "stopped_early")}
        atomic_write_text(self._files(variant, seed, finalized)[1],
                          json.dumps({"key": key, "fit": fields}, default=float))
