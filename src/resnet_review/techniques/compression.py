"""Compression of a trained model: structured and unstructured pruning, int8 quantisation.

Each function takes a trained float model and returns the compressed one; fine-tuning goes
through the one training engine (:meth:`resnet_review.experiment.Stage.run` with a ``finalize``
step), evaluation through the one evaluator, cost through the one profiler.

* :func:`prune_structured` removes whole channels with torch-pruning's dependency graph (so the
  channels of every residual sum stay consistent) until the model's MACs have fallen by the
  asked fraction: the result is a smaller dense network that any CPU kernel runs faster.
* :func:`prune_unstructured` zeroes single weights (``torch.nn.utils.prune``): the same
  sparsity, but the tensors keep their shapes, so dense kernels do the same work.
* :func:`quantize_int8` is post-training static int8 quantisation through PyTorch's FX graph
  mode with the x86 qconfig, run on the FBGEMM engine (:func:`select_int8_engine`);
  :func:`prepare_qat` / :func:`convert_int8` are quantisation-aware training. torchao's PT2E
  flow (``X86InductorQuantizer`` + ``torch.compile``) is PyTorch's newer path, but on this
  project's 2-core CPU it measured 0.8-1.4x of fp32 with 2-38 s of compilation, while FX mode
  measured 2.5-4.5x; see the README.
* :func:`load_compressed` rebuilds a saved compressed model from its plain ``state_dict``
  (``weights_only=True``): a structurally pruned one by resizing the dense architecture's layers
  to the saved shapes, an int8 one by converting an untrained copy and loading into it.
* :class:`PruningParams`, :class:`QuantisationParams`: the ``pruning`` and ``quantisation``
  sections of params.yaml; :func:`run_pruning`, :func:`run_quantisation`: notebooks 12 and 13.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..config import (
    Budget,
    PerProfile,
    PlannedRun,
    SourceModel,
    StageParams,
    Strict,
    register_stage_schema,
    scaled_epochs,
)
from ..experiment import Stage
from ..profiling import count_flops, count_params


# --------------------------------------------------------------------------- params
class PruneTarget(Strict):
    """One pruned model: ``structured`` removes channels until MACs fall by ``amount``;
    ``unstructured`` zeroes the ``amount`` fraction of smallest weights (same shapes)."""

    method: Literal["structured", "unstructured"] = "structured"
    amount: float = Field(gt=0, lt=1, description="MACs removed (structured) or weights zeroed (unstructured)")
    importance: Literal["magnitude", "taylor"] = "magnitude"
    profiles: list[Literal["smoke", "cpu", "gpu"]] | None = Field(
        None, description="the profiles this target runs under (default: all), as for a stage's variants")


# the rounds of a structured pruning under every profile: fine steps of the channel ratio, so that
# the target is met closely (smoke, a check of the code, may take coarser ones)
PROFILE_ROUNDS = PerProfile(smoke=100, cpu=100, gpu=100)


@register_stage_schema("pruning")
class PruningParams(StageParams):
    source: SourceModel = SourceModel()
    finetune_epochs_scale: float = Field(0.5, ge=0, le=100, description="fine-tuning epochs after pruning, as a "
                                         "multiple of the profile's epochs (0: none; at least 1 otherwise)")
    taylor_batches: int = Field(4, gt=0, description="training batches whose gradients rank channels (taylor)")
    round_to: int | None = Field(None, gt=0, description="keep channel counts multiples of this")
    prune_rounds: PerProfile = Field(PROFILE_ROUNDS, description="rounds a structured pruning's channel ratio "
                                     "rises in, up to max_channel_ratio; it stops at the first that meets the target")
    targets: dict[str, PruneTarget] = Field(default_factory=dict)

    def targets_under(self, profile: str) -> dict[str, PruneTarget]:
        """The targets that run under ``profile``, in params order."""
        return {n: t for n, t in self.targets.items() if t.profiles is None or profile in t.profiles}

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """Each target and the dense control fine-tuned for ``finetune_epochs_scale`` x the epochs
        (counted at the dense model's cost: an upper bound for a pruned one)."""
        epochs = scaled_epochs(budget.epochs, self.finetune_epochs_scale)
        names = ["dense_finetuned", *self.targets_under(profile)] if epochs else []
        return [self._model_run(n, budget, epochs=epochs) for n in names]


@register_stage_schema("quantisation")
class QuantisationParams(StageParams):
    source: SourceModel = SourceModel()
    pruned_source: SourceModel | None = Field(None, description="a structurally pruned model to quantise too")
    calibration_batches: int = Field(8, gt=0, description="training batches int8 activation ranges are observed on")
    qat_epochs_scale: float = Field(0.5, ge=0, le=100, description="quantisation-aware fine-tuning epochs, as a "
                                    "multiple of the profile's epochs (0: skip QAT; at least 1 otherwise)")

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """Quantisation-aware fine-tuning of the source; post-training int8 trains nothing."""
        epochs = scaled_epochs(budget.epochs, self.qat_epochs_scale)
        return [self._model_run("int8_qat", budget, epochs=epochs)] if epochs else []


# --------------------------------------------------------------------------- running
Importance = Literal["magnitude", "taylor"]
IMPORTANCES: tuple[str, ...] = ("magnitude", "taylor")


class CompressionError(ValueError):
    """A compression target cannot be met, or a saved compressed model does not fit its architecture."""


@dataclass(frozen=True)
class PruneReport:
    """What one pruning run achieved, measured on the model itself (not the nominal target)."""

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    steps: int

    @property
    def macs_reduction(self) -> float:
        return 1 - self.macs_after / self.macs_before

    @property
    def params_reduction(self) -> float:
        return 1 - self.params_after / self.params_before


def _classifier(model: nn.Module) -> list[nn.Module]:
    """The output layer, never pruned (its outputs are the classes)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
        return [head]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def _macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    return count_flops(model, inputs) // 2


def prune_structured(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], macs_reduction: float, *,
                     importance: Importance = "magnitude",
                     batches: Iterable[tuple[tuple[torch.Tensor, ...], torch.Tensor]] | None = None,
                     steps: int = 100, max_channel_ratio: float = 0.9, round_to: int | None = None) -> PruneReport:
    """Remove channels of ``model`` in place until its MACs fall by at least ``macs_reduction``.

    Channels go in ``steps`` small rounds (at most ``max_channel_ratio`` of any layer's), each
    taking the least important ones of every layer group; pruning stops at the first round that
    reaches the target. ``importance``: ``"magnitude"`` (L2 norm of each channel's weights) or
    ``"taylor"`` (|weight x gradient|, first-order loss change), whose gradients come from
    ``batches`` of ``(inputs, targets)``, cycled, one per round. ``round_to`` keeps channel counts
    multiples of it (kernels like multiples of 8 or 16). The classifier is never pruned.
    """
    import torch_pruning as tp

    if not 0 < macs_reduction < 1:
        raise CompressionError(f"macs_reduction must be in (0, 1), got {macs_reduction}")
    if importance not in IMPORTANCES:
        raise CompressionError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
    batch_list = list(batches or [])
    if importance == "taylor" and not batch_list:
        raise CompressionError("taylor importance needs `batches` of (inputs, targets) for its gradients")
    was_training = model.training
    model.eval()  # batch-norm statistics are not touched by the gradient passes
    macs_before, params_before = _macs(model, example_inputs), count_params(model)
    scorer = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(model, example_inputs, importance=scorer, pruning_ratio=max_channel_ratio,
                                  iterative_steps=steps, ignored_layers=_classifier(model), round_to=round_to)
    goal = (1 - macs_reduction) * macs_before
    # MACs fall about as (1 - channel ratio)^2: count them only from shortly before that round on
    first_check = int(0.8 * steps * (1 - (1 - macs_reduction) ** 0.5) / max_channel_ratio)
    macs, done = macs_before, 0
    for done in range(1, steps + 1):
        if importance == "taylor":
            inputs, targets = batch_list[(done - 1) % len(batch_list)]
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(*inputs), targets).backward()
        pruner.step()
        if done < first_check and done < steps:
            continue
        macs = _macs(model, example_inputs)
        if macs <= goal:
            break
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if macs > goal:
        raise CompressionError(f"pruning {max_channel_ratio:.0%} of every layer's channels cut MACs by only "
                               f"{1 - macs / macs_before:.1%}, short of {macs_reduction:.0%}; raise max_channel_ratio")
    return PruneReport(macs_before, macs, params_before, count_params(model), done)


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prune_unstructured(model: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` fraction of smallest-magnitude weights of all conv and linear layers
    together (global L1), in place. The zeros are kept by masks while the model is fine-tuned;
    :func:`remove_masks` makes them permanent."""
    if not 0 < amount < 1:
        raise CompressionError(f"amount must be in (0, 1), got {amount}")
    torch_prune.global_unstructured(_prunable(model), pruning_method=torch_prune.L1Unstructured, amount=amount)
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    """Fold the pruning masks into the weights (zeros stay zeros; the tensors stay dense)."""
    for module, name in _prunable(model):
        if torch_prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
            torch_prune.remove(module, name)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the conv and linear weights."""
    weights = [getattr(m, n) for m, n in _prunable(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


# ----------------------------------------------------------------------------------- int8
def _qconfig_mapping(qat: bool = False):
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping

    return get_default_qat_qconfig_mapping("x86") if qat else get_default_qconfig_mapping("x86")


def select_int8_engine() -> str:
    """Make FBGEMM the process's quantised engine where PyTorch has it (x86 CPUs), and return the
    engine in use. The default ``x86`` engine chooses between FBGEMM and oneDNN per call; on an
    AMD EPYC with avx512_vnni the cpu quantisation stage on that engine timed int8 ResNet50 at
    batch 32 *slower* than fp32 (77.7 against 52.6 ms); on FBGEMM it measures 13.4 against
    49.9 ms (docs/compression.md). Weights are packed for the engine current when a
    model is converted or loaded, so every int8 path here calls this first."""
    if "fbgemm" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "fbgemm"
    return torch.backends.quantized.engine


def _fx():
    # FX graph mode is deprecated in favour of torchao's PT2E flow, which does not speed up this
    # CPU (module docstring); the warning is said once in the README, not on every call
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*", category=DeprecationWarning)
    from torch.ao.quantization import quantize_fx

    select_int8_engine()
    return quantize_fx


def quantize_int8(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                  calibration: Iterable[tuple[torch.Tensor, ...]]) -> nn.Module:
    """Post-training static int8 quantisation (x86 backend) of a copy of ``model``: observers
    record activation ranges on the ``calibration`` batches, then weights and activations are
    converted to int8. Returns a CPU model; ``model`` is unchanged."""
    fx = _fx()
    float_model = copy.deepcopy(model).cpu().float().eval()
    prepared = fx.prepare_fx(float_model, _qconfig_mapping(), tuple(x.cpu() for x in example_inputs))
    seen = 0
    with torch.no_grad():
        for inputs in calibration:
            prepared(*(x.cpu().float() for x in inputs))
            seen += 1
    if not seen:
        raise CompressionError("int8 calibration needs at least one batch of inputs")
    return fx.convert_fx(prepared)


def prepare_qat(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """A copy of ``model`` with fake-quantisation in its graph, to be fine-tuned (quantisation-aware
    training) and then turned into an int8 model by :func:`convert_int8`."""
    fx = _fx()
    float_model = copy.deepcopy(model).cpu().float().train()
    device = next(model.parameters()).device
    return fx.prepare_qat_fx(float_model, _qconfig_mapping(qat=True), tuple(x.cpu() for x in example_inputs)).to(device)


def convert_int8(qat_model: nn.Module) -> nn.Module:
    """The int8 CPU model of a quantisation-aware-trained one (which is left unchanged)."""
    return _fx().convert_fx(copy.deepcopy(qat_model).cpu().eval())


# ------------------------------------------------------------------------------ save/load
def _weight_shapes(state_dict: dict) -> dict[str, tuple[int, ...]]:
    """``{module name: weight shape}`` of a float, quantised or packed (int8 linear) state dict."""
    shapes = {}
    for key, value in state_dict.items():
        if key.endswith("._packed_params._packed_params") and isinstance(value, tuple):
            shapes[key.removesuffix("._packed_params._packed_params")] = tuple(value[0].shape)
        elif key.endswith(".weight") and isinstance(value, torch.Tensor):
            shapes[key.removesuffix(".weight")] = tuple(value.shape)
    return shapes


def resize_to(model: nn.Module, state_dict: dict) -> nn.Module:
    """Shrink the conv, batch-norm and linear layers of ``model`` in place to the shapes stored in
    ``state_dict`` (a structurally pruned model's, float or int8), so that it can be loaded.

    A batch norm the state dict has no weights of (int8: folded into its conv) takes the output
    channels of the conv before it in module order, as in ResNets."""
    shapes = _weight_shapes(state_dict)
    last_conv_out = None
    for name, module in model.named_modules():
        shape = shapes.get(name)
        if isinstance(module, nn.Conv2d) and shape:
            module.out_channels, module.in_channels = shape[0], shape[1] * module.groups
        elif isinstance(module, nn.Linear) and shape:
            module.out_features, module.in_features = shape[0], shape[1]
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and (shape or last_conv_out):
            module.num_features = shape[0] if shape else last_conv_out
        else:
            continue
        size = module.num_features if isinstance(module, nn.modules.batchnorm._BatchNorm) else shape
        if isinstance(module, nn.Conv2d):
            last_conv_out = shape[0]
        for tensor_name, tensor in list(module.named_parameters(recurse=False)):
            new_shape = size if tensor_name == "weight" else (size if isinstance(size, int) else size[0],)
            setattr(module, tensor_name, nn.Parameter(torch.empty(new_shape, dtype=tensor.dtype),
                                                      requires_grad=tensor.requires_grad))
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for buffer in ("running_mean", "running_var"):
                if getattr(module, buffer, None) is not None:
                    module.register_buffer(buffer, torch.empty(module.num_features))
    return model


def load_compressed(path: str | os.PathLike, build: Callable[[], nn.Module], *,
                    example_inputs: tuple[torch.Tensor, ...] | None = None, int8: bool = False) -> nn.Module:
    """Rebuild a compressed model saved as a plain ``state_dict`` (loaded with ``weights_only=True``).

    ``build`` makes the dense float architecture. A pruned model's smaller layers are recovered
    from the saved shapes; with ``int8`` the (resized) architecture is converted to int8 with
    ``example_inputs`` first, and the saved scales, zero points and packed weights loaded into it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compressed model {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = resize_to(build().eval(), state)
    if int8:
        if example_inputs is None:
            raise CompressionError("loading an int8 model needs example_inputs to rebuild its graph")
        fx = _fx()
        model = fx.convert_fx(fx.prepare_fx(model, _qconfig_mapping(), tuple(x.cpu() for x in example_inputs)))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CompressionError(f"{path} does not fit the model it is loaded into: {str(err).splitlines()[0]}") from err
    return model


def model_bytes(model: nn.Module) -> int:
    """Bytes of the saved ``state_dict`` (what a deployed model weighs on disk)."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


# --------------------------------------------------------------------------- stage glue
Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


def training_batches(train, batch_size: int, count: int, seed: int) -> list[Batch]:
    """``count`` shuffled ``(inputs, targets)`` batches of a training set (for Taylor importance
    and int8 calibration: training images only, never validation or test)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).to(train.device)
    batch_size = min(batch_size, len(train))
    out = []
    for k in range(count):
        index = order[(k * batch_size) % len(train):][:batch_size]
        out.append((tuple(x[index] for x in train.inputs), train.targets[index]))
    return out


def prune_run(stage: Stage, name: str, source: Callable[[int], nn.Module], target, *, epochs: int, info: dict,
              rounds: int, splits=None, taylor_batches: int = 4, round_to: int | None = None, **run_kwargs):
    """:meth:`~resnet_review.experiment.Stage.run` of ``source(seed)`` pruned to ``target`` (a
    :class:`~PruneTarget`) and fine-tuned for ``epochs`` on ``splits``
    (default the stage's), in ``rounds`` rounds of :func:`prune_structured` (structured targets), with
    what the pruning achieved (sparsity; MACs and parameters removed)
    written beside its metrics. ``run_kwargs`` go to ``Stage.run`` (recipe, hooks)."""
    splits = splits or stage.splits
    example = tuple(x[:1] for x in splits.train.inputs)
    reports: list[PruneReport] = []

    def build(seed: int) -> nn.Module:
        model = source(seed)
        if target.method == "unstructured":
            return prune_unstructured(model, target.amount)
        batches = (training_batches(splits.train, stage.budget.batch_size, taylor_batches, seed)
                   if target.importance == "taylor" else None)
        reports.append(prune_structured(model, example, target.amount, importance=target.importance,
                                        batches=batches, round_to=round_to, steps=rounds))
        return model

    finalize = remove_masks if target.method == "unstructured" else None
    result = stage.run(name, build, splits=splits, epochs=epochs, finalize=finalize,
                       info=info | target.model_dump(), **run_kwargs)
    achieved = {"weight_sparsity": sparsity(result.model)}
    if reports:
        achieved |= {"macs_reduction": sum(r.macs_reduction for r in reports) / len(reports),
                     "params_reduction": sum(r.params_reduction for r in reports) / len(reports)}
    stage.annotate(name, **achieved)
    return result


def int8_run(stage: Stage, name: str, build: Callable[[int], nn.Module], *, calibration_batches: int, info: dict,
             splits=None):
    """:meth:`~resnet_review.experiment.Stage.run` of ``build(seed)`` quantised to int8 after
    training (0 epochs), calibrated on ``calibration_batches`` of that seed's training batches of
    ``splits`` (default the stage's); the float model is kept for counting parameters and MACs."""
    splits = splits or stage.splits
    example = tuple(x[:1] for x in splits.train.inputs)
    built: dict[str, int] = {}

    def build_float(seed: int) -> nn.Module:
        built["seed"] = seed  # the calibration batches depend on the seed
        return build(seed)

    def quantise(model: nn.Module) -> nn.Module:
        batches = training_batches(splits.train, stage.budget.batch_size, calibration_batches, built["seed"])
        return quantize_int8(model, example, [inputs for inputs, _ in batches])

    return stage.run(name, build_float, splits=splits, epochs=0, info=info, finalize=quantise)


def run_pruning(stage: Stage) -> dict:
    """Every ``targets`` entry of the stage's params (see :class:`~PruningParams`)
    and the control ``dense_finetuned``: per seed, the source stage's trained model, pruned, then
    fine-tuned by the one engine for the same epochs; evaluated and profiled like any variant."""
    cfg, b = stage.config, stage.budget
    epochs = scaled_epochs(b.epochs, cfg.finetune_epochs_scale)

    def source(seed: int) -> nn.Module:
        return stage.load_trained(cfg.source.stage, cfg.source.variant, seed, model=cfg.model)

    stage.require_checkpoints(cfg.source.stage, cfg.source.variant)
    base = {"source": f"{cfg.source.stage}/{cfg.source.variant}", "finetune_epochs": epochs}
    results = {"dense_finetuned": stage.run("dense_finetuned", source, epochs=epochs,
                                            info=base | {"method": "none", "amount": 0.0})}
    targets = cfg.targets_under(stage.params.profile)
    if skipped := sorted(set(cfg.targets) - set(targets)):
        print(f"stage '{stage.name}': targets {skipped} do not run under profile '{stage.params.profile}'",
              file=sys.stderr)
    for name, target in targets.items():
        results[name] = prune_run(stage, name, source, target, epochs=epochs, info=base,
                                  taylor_batches=cfg.taylor_batches, round_to=cfg.round_to,
                                  rounds=cfg.prune_rounds.under(stage.params.profile))
    return results


def run_quantisation(stage: Stage) -> dict:
    """``fp32`` (the source model as trained), ``int8_ptq`` (calibrated on training batches),
    ``int8_qat`` (quantisation-aware fine-tuning, when ``qat_epochs_scale`` > 0) and, with a
    ``pruned_source``, ``pruned_fp32`` / ``pruned_int8``; the fp32 models are evaluated untouched
    (0 epochs), so every difference is the quantisation's."""
    cfg, b, splits = stage.config, stage.budget, stage.splits
    example = tuple(x[:1] for x in splits.train.inputs)

    def source(seed: int) -> nn.Module:
        return stage.load_trained(cfg.source.stage, cfg.source.variant, seed, model=cfg.model)

    for src in (cfg.source, cfg.pruned_source):  # every input weight exists before the first run
        if src is not None:
            stage.require_checkpoints(src.stage, src.variant)
    info = {"source": f"{cfg.source.stage}/{cfg.source.variant}"}
    results = {"fp32": stage.run("fp32", source, epochs=0, save_weights=False, info=info | {"precision": "fp32"})}
    results["int8_ptq"] = int8_run(stage, "int8_ptq", source, calibration_batches=cfg.calibration_batches,
                                   info=info | {"precision": "int8", "method": "ptq"})
    qat_epochs = scaled_epochs(b.epochs, cfg.qat_epochs_scale)
    if qat_epochs:
        results["int8_qat"] = stage.run("int8_qat", lambda seed: prepare_qat(source(seed), example), epochs=qat_epochs,
                                        finalize=convert_int8,
                                        info=info | {"precision": "int8", "method": "qat", "qat_epochs": qat_epochs})
    if cfg.pruned_source is not None:
        pruned = cfg.pruned_source

        def pruned_source(seed: int) -> nn.Module:
            path = stage.checkpoint(pruned.stage, pruned.variant, seed)
            return load_compressed(path, stage.model_factory(cfg.model)).to(stage.accel.device)

        pinfo = {"source": f"{pruned.stage}/{pruned.variant}"}
        results["pruned_fp32"] = stage.run("pruned_fp32", pruned_source, epochs=0, save_weights=False,
                                           info=pinfo | {"precision": "fp32"})
        results["pruned_int8"] = int8_run(stage, "pruned_int8", pruned_source,
                                          calibration_batches=cfg.calibration_batches,
                                          info=pinfo | {"precision": "int8", "method": "ptq"})
    return results
