"""Table 1 measured (notebook 16): depth from a model's name, the batch-size sweep, the table's
measured column, and the smallest share of the data a variant is cut to."""

import math

import pandas as pd
import pytest
import timm
import torch
from test_experiment import open_stage

from resnet_review.config import MIN_TRAIN_IMAGES, ParamsError, validate_params
from resnet_review.techniques.limitations import TABLE1, batch_sweep, depth_of, table1


@pytest.mark.parametrize("model, depth", [("resnet18", 18), ("resnet101", 101), ("wide_resnet50_2", 50),
                                          ("seresnet50", 50), ("resnext50_32x4d", None), ("hff_senet", None)])
def test_depth_is_read_from_the_model_name(model, depth):
    assert depth_of(model) == depth


@pytest.mark.slow
def test_batch_sweep_times_each_batch_and_measures_training_memory():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10, in_chans=1)
    sweep = batch_sweep(model, [(1, 28, 28)], [1, 8], repeats=2, memory_batch_sizes=[8])
    assert list(sweep.index) == [1, 8] and sweep.index.name == "batch_size"
    assert (sweep["latency_ms"] > 0).all()
    assert sweep["ms_per_image"].tolist() == pytest.approx((sweep["latency_ms"] / sweep.index).tolist())
    assert sweep["images_per_s"].tolist() == pytest.approx((1000 * sweep.index / sweep["latency_ms"]).tolist())
    assert math.isnan(sweep.loc[1, "peak_train_memory_mb"]) and sweep.loc[8, "peak_train_memory_mb"] > 0
    assert not model.training  # left in eval mode on the CPU, as measured


def _runs(rows: list[dict]) -> pd.DataFrame:
    """Rows shaped like :meth:`Stage.frame`: means with their 95% CI bounds."""
    out = []
    for row in rows:
        flat = {k: v for k, v in row.items() if not isinstance(v, tuple)}
        for metric, (mean, half) in ((k, v) for k, v in row.items() if isinstance(v, tuple)):
            flat |= {f"{metric}_mean": mean, f"{metric}_ci_low": mean - half, f"{metric}_ci_high": mean + half}
        out.append(flat)
    return pd.DataFrame(out)


def test_table1_fills_every_row_from_the_measurements():
    resolution = _runs([{"label": "limitations/res_8px", "img_size": 8, "test_acc": (0.41, 0.02)},
                        {"label": "baseline/resnet50", "img_size": 28, "test_acc": (0.80, 0.01)}])
    data = _runs([{"label": "limitations/data_1pct", "train_fraction": 0.01, "train_val_gap": (0.30, 0.05)},
                  {"label": "baseline/resnet50", "train_fraction": 1.0, "train_val_gap": (0.02, 0.01)}])
    depth = _runs([{"label": "wide_deep/resnet18", "depth": 18, "params_m": 11.2, "gmacs": 0.03,
                    "train_time_s_mean": 30.0, "peak_train_memory_mb": math.nan, "train_acc": (0.9, 0.01),
                    "test_acc": (0.82, 0.01)},
                   {"label": "baseline/resnet50", "depth": 50, "params_m": 23.5, "gmacs": 0.08,
                    "train_time_s_mean": 60.0, "peak_train_memory_mb": math.nan, "train_acc": (0.85, 0.02),
                    "test_acc": (0.80, 0.01)},
                   {"label": "wide_deep/resnet101", "depth": 101, "params_m": 42.5, "gmacs": 0.16,
                    "train_time_s_mean": 120.0, "peak_train_memory_mb": math.nan, "train_acc": (0.7, 0.05),
                    "test_acc": (0.70, 0.03)}])
    batches = pd.DataFrame({"latency_ms": [10.0, 100.0], "images_per_s": [100.0, 1280.0]},
                           index=pd.Index([1, 128], name="batch_size"))
    corruptions = {"gaussian_blur@2": 0.5, "low_resolution@2": 0.6, "gaussian_noise@0.2": 0.7}

    table = table1(resolution, data, depth, batches, corruptions, clean_acc=0.8)
    assert list(table["source"]) == [src for src, _, _ in TABLE1] and len(table) == 8
    assert list(table.index) == [key for _, _, key in TABLE1]
    measured = table["measured here"]
    assert measured["resolution"] == "test accuracy 0.410 ± 0.020 at 8 px vs 0.800 ± 0.010 at 28 px"
    assert "0.300 ± 0.050 with 1% of the images" in measured["data"] and "0.020 ± 0.010 with 100%" in measured["data"]
    assert measured["depth"].startswith("wide_deep/resnet101: x2.00 training time, x2.00 MACs")
    assert "wide_deep/resnet18: x0.50, x0.38" in measured["depth"]
    assert "training memory not measured under this profile" in measured["memory"]
    # the detail row is blur and down-then-up-sampling only, against clean accuracy
    assert measured["detail"] == "gaussian_blur@2 0.500, low_resolution@2 0.600 vs clean 0.800"
    assert measured["speed"] == "CPU latency 10.0 ms at batch 1, 1280 images/s at best (batch 128)"

    batches["peak_train_memory_mb"] = [math.nan, 900.0]
    assert table1(resolution, data, depth, batches, corruptions, 0.8).loc["memory", "measured here"].endswith(
        "peak training memory 900 MB at batch 128")


def test_a_tiny_share_of_the_data_keeps_two_images_of_every_class(paths, tmp_path):
    stage = open_stage(paths, tmp_path, {"model": "resnet18"})
    train = stage.splits_for(0.001).train
    assert len(train) == MIN_TRAIN_IMAGES
    assert torch.bincount(train.targets.cpu(), minlength=10).tolist() == [2] * 10


@pytest.mark.parametrize("section, message", [
    ({"low_data_from": ["dropout"]}, "limitations.low_data_from: Value error, must be 'stage/variant'"),
    ({"batch_sizes": [1, 0]}, "limitations.batch_sizes: Value error, batch sizes must be positive"),
    ({"batch_sizes": []}, "limitations.batch_sizes: List should have at least 1 item"),
])
def test_bad_limitations_params_are_refused_with_the_key_named(paths, section, message):
    import yaml

    raw = yaml.safe_load(paths.params.read_text())
    raw["limitations"] |= section
    with pytest.raises(ParamsError, match=message.replace("(", r"\(")):
        validate_params(raw)
