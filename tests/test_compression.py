"""Compression: pruned and quantised models run, keep their claimed reductions and predictions,
and survive a save/reload with weights_only=True."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from resnet_review.config import Recipe, load_params
from resnet_review.engine import fit
from resnet_review.evaluate import predict
from resnet_review.models import build_model
from resnet_review.profiling import count_flops, count_params, is_quantized
from resnet_review.stats import Estimate, verdict
from resnet_review.storage import atomic_save
from resnet_review.techniques import compression

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = (torch.zeros(1, 1, 28, 28),)


def resnet(name: str = "resnet18") -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=10, in_chans=1)


@pytest.fixture(scope="module")
def trained_resnet18(small_splits):
    """A ResNet18 trained for one epoch on 2000 real images (about 80% test accuracy)."""
    model = resnet()
    fit(model, small_splits.train, None, recipe=Recipe(lr=0.05), epochs=1, batch_size=64, progress=False)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
@pytest.mark.parametrize("amount", [0.25, 0.5])
def test_structured_pruning_meets_the_mac_target_and_still_trains(importance, amount, tiny_splits):
    model = resnet("resnet50")
    macs = count_flops(model, EXAMPLE) // 2
    batches = [((tiny_splits.train.inputs[0][:16],), tiny_splits.train.targets[:16])]
    report = compression.prune_structured(model, EXAMPLE, amount, importance=importance, batches=batches)
    after = count_flops(model, EXAMPLE) // 2
    assert report.macs_before == macs and report.macs_after == after
    assert amount <= 1 - after / macs < amount + 0.05  # the target, not far beyond it
    assert count_params(model) < 0.9 * report.params_before
    out = model.train()(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_structured_pruning_stops_within_its_rounds():
    model = resnet()
    report = compression.prune_structured(model, EXAMPLE, 0.5, steps=10)
    assert report.steps <= 10 and report.macs_reduction >= 0.5  # coarse rounds: the target met, in 10 at most


def test_a_pruning_stage_prunes_in_the_rounds_its_profile_gives(monkeypatch, tiny_splits):
    seen = []

    def prune(model, example, amount, **kwargs):
        seen.append(kwargs["steps"])
        return compression.PruneReport(4, 2, 4, 2, kwargs["steps"])

    monkeypatch.setattr(compression, "prune_structured", prune)
    annotated = {}
    stage = SimpleNamespace(splits=tiny_splits, budget=SimpleNamespace(batch_size=16),
                            run=lambda name, build, **kwargs: SimpleNamespace(model=build(0)),
                            annotate=lambda name, **values: annotated.update(values))
    compression.prune_run(stage, "p50", lambda seed: resnet(), compression.PruneTarget(amount=0.5), epochs=0, info={},
                          rounds=7)
    assert seen == [7] and annotated["macs_reduction"] == 0.5
    for profile, rounds in (("smoke", 25), ("cpu", 100), ("gpu", 100)):  # coarse steps for the check of the code
        params = load_params(ROOT / "params.yaml", profile=profile)
        assert params.stage("pruning").prune_rounds.under(profile) == rounds
        assert params.stage("synergy").compress.prune_rounds.under(profile) == rounds


def test_bad_pruning_requests_are_refused():
    with pytest.raises(compression.CompressionError, match="macs_reduction must be in"):
        compression.prune_structured(resnet(), EXAMPLE, 1.2)
    with pytest.raises(compression.CompressionError, match="taylor importance needs"):
        compression.prune_structured(resnet(), EXAMPLE, 0.5, importance="taylor")
    with pytest.raises(compression.CompressionError, match="amount must be in"):
        compression.prune_unstructured(resnet(), 0.0)


def test_unstructured_pruning_zeroes_weights_but_keeps_shapes():
    model = resnet()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    compression.prune_unstructured(model, 0.5)
    model(torch.randn(2, 1, 28, 28)).sum().backward()  # trainable with its masks
    compression.remove_masks(model)
    assert compression.sparsity(model) == pytest.approx(0.5, abs=1e-3)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert count_flops(model, EXAMPLE) == count_flops(resnet(), EXAMPLE)  # dense work is unchanged


def test_structurally_pruned_model_reloads_with_the_same_outputs(tmp_path, trained_resnet18, small_splits):
    model = _copy(trained_resnet18)
    compression.prune_structured(model, EXAMPLE, 0.5)
    path = atomic_save(model.state_dict(), tmp_path / "pruned.pt")
    again = compression.load_compressed(path, resnet)
    x = small_splits.test.inputs[0][:64]
    assert torch.equal(model.eval()(x), again.eval()(x))
    assert count_params(again) == count_params(model) < count_params(resnet())


def test_int8_predictions_agree_with_fp32_on_real_images(trained_resnet18, small_splits):
    calibration = [(small_splits.train.inputs[0][i:i + 64],) for i in range(0, 512, 64)]
    int8 = compression.quantize_int8(trained_resnet18, EXAMPLE, calibration)
    assert is_quantized(int8) and not is_quantized(trained_resnet18)
    fp32_pred = predict(trained_resnet18, small_splits.test).argmax(1)
    int8_pred = predict(int8, small_splits.test).argmax(1)
    accuracy = fp32_pred.eq(small_splits.test.targets).float().mean()
    assert accuracy > 0.6  # a model that learned something, so agreement is not chance
    assert fp32_pred.eq(int8_pred).float().mean() > 0.95
    assert compression.model_bytes(int8) < 0.35 * compression.model_bytes(trained_resnet18)


def test_int8_and_pruned_int8_models_reload_with_the_same_outputs(tmp_path, trained_resnet18, small_splits):
    x = small_splits.test.inputs[0][:64]
    pruned = _copy(trained_resnet18)
    compression.prune_structured(pruned, EXAMPLE, 0.5)
    for name, model in (("int8", trained_resnet18), ("pruned_int8", pruned)):
        int8 = compression.quantize_int8(model, EXAMPLE, [(x,)])
        path = atomic_save(int8.state_dict(), tmp_path / f"{name}.pt")
        again = compression.load_compressed(path, resnet, example_inputs=EXAMPLE, int8=True)
        assert torch.equal(int8(x), again(x)), name


def test_quantisation_aware_training_converts_to_int8(trained_resnet18, small_splits):
    qat = compression.prepare_qat(trained_resnet18, EXAMPLE)
    fit(qat, small_splits.train.take(torch.arange(256)), None, recipe=Recipe(lr=0.001, warmup_epochs=0), epochs=1,
        batch_size=64, progress=False)
    int8 = compression.convert_int8(qat)
    assert is_quantized(int8)
    agree = predict(int8, small_splits.test).argmax(1).eq(predict(trained_resnet18, small_splits.test).argmax(1))
    assert agree.float().mean() > 0.8


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = atomic_save(resnet("resnet18").state_dict(), tmp_path / "r18.pt")
    with pytest.raises(compression.CompressionError, match="does not fit"):
        compression.load_compressed(path, lambda: resnet("resnet34"))
    with pytest.raises(FileNotFoundError, match="not found"):
        compression.load_compressed(tmp_path / "missing.pt", resnet)


def test_non_inferiority_margin_in_verdicts():
    small_loss = Estimate(-0.004, -0.008, -0.001, 3)
    assert verdict(small_loss, +1) == "not supported"  # it is a loss
    assert verdict(small_loss, +1, margin=0.01) == "supported"  # but under 1 point
    assert verdict(Estimate(-0.03, -0.05, -0.02, 3), +1, margin=0.01) == "not supported"
    assert verdict(Estimate(-0.01, -0.02, 0.0, 3), +1, margin=0.01) == "inconclusive at this budget"


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def test_quantisation_checks_every_source_before_it_runs_anything(paths, tmp_path, monkeypatch):
    """A ``pruned_source`` the pruning stage does not produce under this profile (a gpu-only
    target) fails when the stage opens, naming what the pruning stage has, not after the
    fp32, PTQ and QAT runs of the unpruned model."""
    from test_training import tiny_stages

    stages = tiny_stages(paths, tmp_path, pruning={"targets": {
                             "m50": {"amount": 0.5}, "m25": {"amount": 0.25, "profiles": ["gpu"]}}},
                         quantisation={"pruned_source": {"stage": "pruning", "variant": "m25"}})
    quant = stages["quantisation"]
    for stage, variant in (("baseline", "resnet50"), ("pruning", "m50")):
        folder = tmp_path / "stages" / stage
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(
            {"profile": "smoke", variant: {"per_seed": {"seed": [0, 1], "test_acc": [0.5, 0.5]}}}))
        for seed in (0, 1):
            atomic_save(resnet().state_dict(), tmp_path / "models" / stage / variant / f"seed{seed}.pt")
    monkeypatch.setattr(quant, "run", lambda *a, **k: pytest.fail("a model ran before the sources were checked"))
    with pytest.raises(KeyError, match=r"no per-seed results for variant 'm25' \(it has \['m50'\]\)"):
        compression.run_quantisation(quant)
    assert not (tmp_path / "stages" / "quantisation" / "metrics.json").exists()
    (tmp_path / "models" / "baseline" / "resnet50" / "seed1.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no weights of 'resnet50' for seed 1"):
        compression.run_quantisation(quant)



@pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines, reason="no FBGEMM in this build")
def test_int8_models_are_built_and_reloaded_on_fbgemm(tmp_path, trained_resnet18, small_splits):
    """The x86 engine's per-call choice ran int8 ResNet50 at batch 32 as slowly as fp32 on an
    AMD EPYC: converting or loading an int8 model selects FBGEMM first, whatever was set before."""
    batch = (small_splits.train.inputs[0][:32],)
    torch.backends.quantized.engine = "onednn"
    int8 = compression.quantize_int8(trained_resnet18, batch, [batch])
    assert torch.backends.quantized.engine == "fbgemm"
    path = atomic_save(int8.state_dict(), tmp_path / "int8.pt")
    torch.backends.quantized.engine = "onednn"
    again = compression.load_compressed(path, resnet, example_inputs=batch, int8=True)
    assert torch.backends.quantized.engine == "fbgemm"
    assert torch.equal(predict(again, small_splits.test), predict(int8, small_splits.test))
