import json
import math
import subprocess
import sys

import pytest
import torch

from resnet_review.models import build_model
from resnet_review.profiling import count_flops, count_params, example_inputs, profile_model


def test_resnet18_matches_its_published_size():
    # torchvision/timm ResNet18, 224 px, 3 channels, 1000 classes: 11.69 M parameters, 1.82 GMACs
    model = build_model("resnet18", num_classes=1000, in_chans=3)
    assert count_params(model) == 11_689_512
    macs = count_flops(model, example_inputs([(3, 224, 224)], 1)) / 2
    assert macs / 1e9 == pytest.approx(1.82, abs=0.01)


def test_profile_of_the_baseline_is_complete_and_leaves_the_model_alone():
    model = build_model("resnet50", num_classes=10, in_chans=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof = profile_model(model, [(1, 28, 28)], repeats=5, cuda=False)  # medians robust to a busy machine
    assert prof.params == 23_522_250
    assert prof.macs == prof.flops // 2 and 0.07e9 < prof.macs < 0.09e9
    assert set(prof.latency_ms) == {"cpu_b1", "cpu_b32"}
    # positive and finite; no ordering between them: on a busy machine a batch of one can take longer
    assert all(0 < ms < math.inf for ms in prof.latency_ms.values()), prof.latency_ms
    assert prof.threads == torch.get_num_threads()
    # one step allocates gradients as large as the weights, plus activations
    assert prof.checkpoint_mb < prof.peak_train_memory_mb < 2000, prof.peak_train_memory_method
    assert prof.checkpoint_mb == pytest.approx(23_522_250 * 4 / 2**20, rel=0.02)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cpu_training_memory_is_stable_and_grows_with_the_batch():
    from resnet_review.profiling import peak_training_memory_mb

    model = build_model("resnet18", num_classes=10, in_chans=1)
    small = [peak_training_memory_mb(model, [(1, 28, 28)], 16)[0] for _ in range(2)]
    large, method = peak_training_memory_mb(model, [(1, 28, 28)], 256)
    assert small[0] == pytest.approx(small[1], rel=0.05), small  # a fresh process each time
    assert large > small[0] + 20, (small, large)
    assert "fresh process" in method


def test_cpu_training_memory_of_a_failing_step_says_why():
    from resnet_review.profiling import peak_training_memory_mb

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 2))  # the inputs have 3 features
    peak, method = peak_training_memory_mb(model, [(3,)], 4)
    assert math.isnan(peak)
    assert method.startswith("unavailable (RuntimeError") and "mat1 and mat2" in method, method


@pytest.mark.slow
def test_cpu_training_memory_after_a_timed_out_measurement_starts_afresh():
    from resnet_review.profiling import peak_training_memory_mb

    model = build_model("resnet18", num_classes=10, in_chans=1)
    peak, method = peak_training_memory_mb(model, [(1, 28, 28)], 16, timeout_s=0.01)
    assert math.isnan(peak) and method == "unavailable (timed out after 0.01 s)"
    peak, method = peak_training_memory_mb(model, [(1, 28, 28)], 16)
    assert 1 < peak < 2000, method


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "resnet_review.profiling", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_cli_json():
    out = run_cli("resnet18", "--img-size", "32", "--in-chans", "3", "--num-classes", "10", "--repeats", "2", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["model"] == "resnet18" and data["params"] == count_params(build_model("resnet18", 10, 3))
    assert data["input_shapes"] == [[3, 32, 32]]


@pytest.mark.slow
def test_cli_rejects_bad_arguments_with_a_clear_message():
    bad_size = run_cli("resnet18", "--img-size", "0")
    assert bad_size.returncode == 2 and "--img-size must be positive" in bad_size.stderr
    unknown = run_cli("resnet5O")
    assert unknown.returncode == 2 and "unknown model 'resnet5O'" in unknown.stderr


def test_architecture_key_ignores_weights_and_dropout_rates_but_not_shapes():
    from resnet_review.models import build_model
    from resnet_review.profiling import architecture_key

    a = build_model("resnet18", num_classes=10, in_chans=1, drop_rate=0.0)
    b = build_model("resnet18", num_classes=10, in_chans=1, drop_rate=0.5)
    torch.nn.init.zeros_(b.fc.weight)
    assert architecture_key(a) == architecture_key(b)
    assert architecture_key(a) != architecture_key(build_model("resnet18", num_classes=5, in_chans=1))
    assert architecture_key(a) != architecture_key(build_model("resnet18", num_classes=10, in_chans=1,
                                                               act_layer="silu"))


def test_a_traced_model_runs_like_the_model_in_another_process_without_its_code(tmp_path, capsys):
    from resnet_review.profiling import compare_latency, load_traced, save_traced
    from resnet_review.techniques.compression import quantize_int8

    torch.manual_seed(0)
    x = (torch.randn(1, 1, 28, 28),)
    models = {"fp32": build_model("resnet18", num_classes=10, in_chans=1).eval(),
              "int8": quantize_int8(build_model("resnet18", num_classes=10, in_chans=1), x, [x, x]),
              "pair": build_model("mmff_resnet50", backbone="resnet18").eval()}
    shapes = {"fp32": [(1, 28, 28)], "int8": [(1, 28, 28)], "pair": [(1, 14, 28), (1, 14, 28)]}
    loaded = {}
    for name, model in models.items():
        path = save_traced(model, shapes[name], tmp_path / f"{name}.pt")
        loaded[name], got = load_traced(path)
        assert got == shapes[name]
        inputs = example_inputs(shapes[name], 3)  # traced at batch 1, run at another
        with torch.no_grad():
            assert torch.allclose(loaded[name](*inputs), model(*inputs), atol=1e-4), name
    times = compare_latency(loaded, shapes, batch_sizes=(1,), repeats=1, rounds=2)
    assert set(times) == set(models) and all(len(t["cpu_b1"]) == 2 and min(t["cpu_b1"]) > 0 for t in times.values())

    class Untraceable(torch.nn.Module):
        def forward(self, x):
            return "not a tensor"  # a traced function returns tensors

    assert save_traced(Untraceable(), [(1, 4, 4)], tmp_path / "no.pt") is None
    assert "Untraceable cannot be traced" in capsys.readouterr().err and not (tmp_path / "no.pt").exists()
