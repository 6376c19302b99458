"""Transfer learning without downloads: pretrain on some Fashion-MNIST classes, adapt to the others.

No hub weights are reachable offline, so the source task is in-domain: a ResNet50 is trained on
the source classes (by default 0-4: T-shirt, trouser, pullover, dress, coat) with the profile's
budget, then adapted to the disjoint target classes (5-9: sandal, shirt, sneaker, bag, ankle
boot) with a small share of their training images, by one of four methods:

* ``scratch`` — no transfer: a fresh model trained on the target images (the control);
* ``finetune`` — every weight starts from the source model and is trained;
* ``linear_probe`` — the source model's features are frozen, only a new classifier is trained;
* ``frozen_early`` — the stem, ``layer1`` and ``layer2`` are frozen, the rest is trained.

Frozen batch-norm layers are converted to ``FrozenBatchNorm2d`` (timm's ``freeze``): their
statistics and affine parameters stay those of the source model in training mode too, so a
frozen block computes exactly what it computed on the source task. Updating them on target
batches of a dozen images would move the "frozen" features and make their statistics noisy.

A user with a real pretrained checkpoint (e.g. ImageNet weights of timm's ``resnet50``) sets
``pretrained_path``: that checkpoint is then the source of every seed and nothing is pretrained.
Its 3-channel stem is converted for the project's grey images with timm's ``adapt_input_conv``
(the RGB filters summed) and its classifier is replaced (``pretrained_exclude``); every other
tensor must match the model by name and shape, or loading stops with the tensor named.

:class:`TransferParams` is the ``transfer`` section of params.yaml; :func:`run_transfer` its stage
(notebook 10).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from timm.utils.model import freeze as timm_freeze
from torch import nn

from ..config import (
    Budget,
    PlannedRun,
    StageParams,
    Strict,
    distinct_names_of,
    names_usable_in_paths,
    register_stage_schema,
    scaled_epochs,
)
from ..data import Splits, TensorData, stratified_subset
from ..experiment import Stage
from ..models import CheckpointError, load_pretrained

# --------------------------------------------------------------------------- params
TRANSFER_METHODS = ("scratch", "finetune", "linear_probe", "frozen_early")


class TargetFraction(Strict):
    """How much of the target task's training data one setting keeps, and for how long it trains.

    ``train_fraction`` is a class-stratified share of the profile's training images of the
    target classes (at least 2 per class); ``epochs_scale`` multiplies the profile's epochs: a
    few dozen images are one optimiser step per epoch, so the tiny settings need many epochs to
    take a sensible number of steps."""

    train_fraction: float = Field(gt=0, le=1)
    epochs_scale: float = Field(1.0, gt=0, le=100)


@register_stage_schema("transfer")
class TransferParams(StageParams):
    """In-domain transfer: pretrain on ``source_classes``, adapt to ``target_classes`` with each
    of ``fractions`` of their data by each of ``methods``; or start from a local checkpoint."""

    source_classes: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=2)
    target_classes: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9], min_length=2)
    fractions: dict[str, TargetFraction] = Field(min_length=1)
    methods: list[str] = Field(default_factory=lambda: list(TRANSFER_METHODS), min_length=1)
    pretrained_path: str | None = Field(None, description="a local (e.g. ImageNet) checkpoint of `model` to "
                                        "adapt instead of pretraining on the source classes")
    pretrained_exclude: list[str] = Field(default_factory=lambda: ["fc."], description="state-dict prefixes "
                                          "left at their fresh initialisation: the classifier")
    variant_profiles: dict[str, list[Literal["smoke", "cpu", "gpu"]]] = Field(
        default_factory=dict, description="`<method>_<fraction>` variants that run only under these profiles")

    @field_validator("source_classes", "target_classes")
    @classmethod
    def _known_classes(cls, classes: list[int]) -> list[int]:
        if not all(0 <= c <= 9 for c in classes) or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct Fashion-MNIST labels 0..9, got {classes}")
        return classes

    _known_methods = field_validator("methods")(distinct_names_of("methods", TRANSFER_METHODS))

    _fraction_names = field_validator("fractions")(names_usable_in_paths("fraction"))

    @model_validator(mode="after")
    def _consistent(self) -> "TransferParams":
        shared = sorted(set(self.source_classes) & set(self.target_classes))
        if shared:
            raise ValueError(f"source_classes and target_classes must be disjoint; both hold {shared}")
        unknown = sorted(set(self.variant_profiles) - set(self.variant_names()))
        if unknown:
            raise ValueError(f"variant_profiles names unknown variants {unknown}; variants: {self.variant_names()}")
        return self

    def variant_names(self) -> list[str]:
        """``<method>_<fraction>`` for every fraction and method, in params order."""
        return [f"{method}_{fraction}" for fraction in self.fractions for method in self.methods]

    def variants_under(self, profile: str) -> list[str]:
        """The ``<method>_<fraction>`` variants that run under ``profile``, in params order."""
        return [n for n in self.variant_names() if profile in self.variant_profiles.get(n, [profile])]

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """The source pretraining on the source classes' images (none with ``pretrained_path``) and
        every ``<method>_<fraction>`` on its share of the target classes' images."""
        runs, per_class = [], budget.train_size / 10
        if self.pretrained_path is None:
            runs.append(self._model_run("source_pretrain", budget, images=round(per_class * len(self.source_classes))))
        selected = self.variants_under(profile)
        for fraction_name, fraction in self.fractions.items():
            for method in self.methods:
                if f"{method}_{fraction_name}" not in selected:
                    continue
                images = max(2 * len(self.target_classes),
                             round(per_class * len(self.target_classes) * fraction.train_fraction))
                runs.append(self._model_run(f"{method}_{fraction_name}", budget, images=images,
                                            epochs=scaled_epochs(budget.epochs, fraction.epochs_scale)))
        return runs


# --------------------------------------------------------------------------- running
# "early layers" of a ResNet: everything up to and including this block is frozen
EARLY_LAYERS = "layer2"
# fewest target images per class a fraction keeps: every class is seen, and a batch-norm batch has > 1 row
MIN_PER_CLASS = 2


# --------------------------------------------------------------------------- data
def class_subset(data: TensorData, classes: Sequence[int]) -> TensorData:
    """The rows of ``data`` whose label is in ``classes``, relabelled ``0..len(classes)-1`` in
    the order given (``classes=[5, 7]``: label 5 becomes 0, label 7 becomes 1)."""
    classes = list(classes)
    if len(set(classes)) != len(classes) or not all(0 <= c < data.num_classes for c in classes):
        raise ValueError(f"classes must be distinct labels of 0..{data.num_classes - 1}, got {classes}")
    relabel = torch.full((data.num_classes,), -1, dtype=torch.long, device=data.device)
    relabel[torch.tensor(classes, device=data.device)] = torch.arange(len(classes), device=data.device)
    keep = (relabel[data.targets] >= 0).nonzero().squeeze(1)
    rows = data.take(keep)
    return TensorData(rows.inputs, relabel[rows.targets], tuple(data.classes[c] for c in classes),
                      f"{data.name}[{','.join(map(str, classes))}]", {**data.meta, "source_labels": classes})


def class_splits(splits: Splits, classes: Sequence[int]) -> Splits:
    """:func:`class_subset` of the train, validation and test sets alike."""
    return Splits(*(class_subset(d, classes) for d in splits))


def take_fraction(data: TensorData, fraction: float, seed: int = 0) -> TensorData:
    """A class-stratified ``fraction`` of ``data``'s rows (at least :data:`MIN_PER_CLASS` per
    class), nested across fractions: the same seeded draw, cut shorter."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    size = max(MIN_PER_CLASS * data.num_classes, round(len(data) * fraction))
    rows = data.take(stratified_subset(data.targets, size, seed))
    return TensorData(rows.inputs, rows.targets, data.classes, f"{data.name}:{fraction:g}", data.meta)


# --------------------------------------------------------------------------- freezing
def freeze(model: nn.Module, up_to: str = EARLY_LAYERS) -> nn.Module:
    """Freeze the model's top-level modules in order up to and including ``up_to`` (for a
    ResNet, ``"layer2"`` is the stem, ``layer1`` and ``layer2``), batch norms included."""
    names = [name for name, _ in model.named_children()]
    if up_to not in names:
        raise ValueError(f"{type(model).__name__} has no top-level module {up_to!r} (it has {names})")
    return _freeze(model, names[:names.index(up_to) + 1])


def linear_probe(model: nn.Module) -> nn.Module:
    """Freeze everything but the classifier (timm's ``get_classifier()``)."""
    head = model.get_classifier()
    names = [name for name, child in model.named_children() if child is not head]
    if len(names) == len(list(model.children())):
        raise ValueError(f"the classifier of {type(model).__name__} is not one of its top-level modules")
    return _freeze(model, names)


def _freeze(model: nn.Module, names: list[str]) -> nn.Module:
    with_params = [n for n in names if any(True for _ in model.get_submodule(n).parameters())]
    if with_params:
        timm_freeze(model, with_params)  # requires_grad off, BatchNorm2d -> FrozenBatchNorm2d
    return model


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


# --------------------------------------------------------------------------- weights
def load_source_weights(model: nn.Module, path: str | os.PathLike, exclude: Sequence[str] = ("fc.",)) -> nn.Module:
    """Load a source checkpoint (``weights_only=True``) into ``model`` with a fresh classifier.

    Keys starting with a prefix of ``exclude`` keep their fresh initialisation; an RGB stem is
    converted for grey input with timm's ``adapt_input_conv``; any other mismatch of names or
    shapes raises :class:`~resnet_review.models.CheckpointError` naming the tensors."""
    return load_pretrained(model, path, exclude=tuple(exclude), adapt_stem=True)


def pretrained_source(path: str | os.PathLike, root: Path) -> Path:
    """The user's checkpoint, relative to the project root, or a clear error before any training."""
    path = Path(path)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise CheckpointError(f"transfer.pretrained_path: {path} does not exist. Give a local checkpoint of the "
                              "stage's model (e.g. timm ImageNet weights saved with torch.save(model.state_dict())); "
                              "its RGB stem is adapted to grey input, its classifier replaced")
    return path


# --------------------------------------------------------------------------- the stage
METHODS: dict[str, Callable[[nn.Module], nn.Module] | None] = {
    "scratch": None,
    "finetune": lambda model: model,
    "linear_probe": linear_probe,
    "frozen_early": freeze,
}


def run_transfer(stage: Stage) -> dict:
    """Per seed, pretrain on the source classes (variant ``source_pretrain``) unless params give a
    ``pretrained_path``; then, for every fraction and method of params (see
    :class:`~TransferParams`), train ``<method>_<fraction>`` on that share of
    the target classes' images. Every run goes through :meth:`Stage.run`: same seeds, recipe and
    evaluation; an architecture is profiled once (every scratch or fine-tuned model is the source's
    architecture and shares its profile; frozen models have their own)."""
    cfg, b = stage.config, stage.budget
    exclude = tuple(cfg.pretrained_exclude)
    target = class_splits(stage.splits, cfg.target_classes)
    common = {"source_classes": cfg.source_classes, "target_classes": cfg.target_classes}
    results = {}
    if cfg.pretrained_path is not None:
        path = pretrained_source(cfg.pretrained_path, stage.paths.root)
        sources = {seed: path for seed in b.seeds}
        common["source"] = str(cfg.pretrained_path)
    else:
        source = class_splits(stage.splits, cfg.source_classes)
        result = stage.run("source_pretrain", stage.model_factory(splits=source), splits=source,
                           recipe=stage.params.train,  # pretrained like the baseline; `train:` is the target's
                           info=common | {"method": "source", "task": "source", "train_images": len(source.train),
                                          "epochs": b.epochs})
        results["source_pretrain"] = result
        sources = {run.seed: run.weights_path for run in result.runs}
        common["source"] = "source_pretrain"
    fresh = stage.model_factory(splits=target)
    load_source_weights(fresh(), sources[b.seeds[0]], exclude)  # a checkpoint that does not fit stops here

    selected = cfg.variants_under(stage.params.profile)
    for fraction_name, fraction in cfg.fractions.items():
        train = take_fraction(target.train, fraction.train_fraction, b.data_seed)
        splits = Splits(train, target.val, target.test)
        epochs = scaled_epochs(b.epochs, fraction.epochs_scale)
        for method in cfg.methods:
            name = f"{method}_{fraction_name}"
            if name not in selected:
                continue
            adapt = METHODS[method]

            def build(seed: int, adapt=adapt) -> nn.Module:
                model = fresh()
                if adapt is None:
                    return model
                return adapt(load_source_weights(model, sources[seed], exclude))

            info = common | {"method": method, "task": "target", "fraction": fraction_name,
                           "train_fraction": fraction.train_fraction, "train_images": len(train), "epochs": epochs}
            results[name] = stage.run(name, build, splits=splits, epochs=epochs, info=info)
    skipped = [n for n in cfg.variant_names() if n not in selected]
    if skipped:
        print(f"stage '{stage.name}': variants {skipped} do not run under profile '{stage.params.profile}'",
              file=sys.stderr)
    return results
