import json
import re
from pathlib import Path

import pandas as pd

from resnet_review import report


def write_stage(stages: Path, name: str, acc: float, profile: str = "smoke"):
    folder = stages / name
    folder.mkdir(parents=True)
    block = {"test_acc": {"mean": acc, "ci_low": acc - 0.01, "ci_high": acc + 0.01},
             "test_macro_f1": {"mean": acc - 0.02, "ci_low": None, "ci_high": None},
             "params_m": 11.7, "gmacs": 0.5, "seeds": 3}
    (folder / "metrics.json").write_text(json.dumps({"profile": profile, "stage": name, "variant_a": block,
                                                     "not_a_variant": {"x": 1}, "step": 3}))
    (folder / "notebook.html").write_text("<html></html>")


def test_report_picks_up_a_stage_it_has_never_seen(tmp_path):
    stages = tmp_path / "stages"
    write_stage(stages, "baseline", 0.80)
    write_stage(stages, "zz_brand_new_technique", 0.85)
    frame = report.collect(stages)
    assert sorted(frame["stage"]) == ["baseline", "zz_brand_new_technique"]
    table = report.master_table(frame)
    row = table[table.stage == "zz_brand_new_technique"].iloc[0]
    assert row["test accuracy (95% CI)"] == "0.8500 ± 0.0100"
    assert row["macro-F1 (95% CI)"] == "0.8300"  # no CI from one seed: mean alone
    paths = report.write_tables(frame, tmp_path / "report")
    assert "zz_brand_new_technique" in paths["md"].read_text()


def test_index_links_resolve(tmp_path):
    stages = tmp_path / "stages"
    write_stage(stages, "baseline", 0.80)
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "fig.png").write_bytes(b"\x89PNG")
    (out / "notebook.html").write_text("<html></html>")
    frame = report.collect(stages)
    index = report.write_index(tmp_path, stages, out, [out / "figures" / "fig.png"], report.master_table(frame))
    links = re.findall(r'(?:href|src)="([^"]+)"', index.read_text())
    assert "stages/baseline/notebook.html" in links and "report/figures/fig.png" in links
    assert all((tmp_path / link).is_file() for link in links)


def test_empty_stages_dir_gives_an_empty_table(tmp_path):
    assert report.master_table(report.collect(tmp_path)).empty


def test_results_page_holds_the_headline_tables_and_times(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "master_table.md").write_text("| stage |\n|---|\n| baseline |\n")
    (out / "pareto_front.md").write_text("| model | CPU ms |\n|---|---|\n| wide_deep/resnet18 | 4.0 |\n")
    (out / "table1.md").write_text("| source | measured here |\n|---|---|\n| K He et al. | x2.2 training time |\n")
    (out / "claims.csv").write_text("id,verdict,verdict_bh,tier\na,supported,supported,gpu\n"
                                    "b,supported,inconclusive after FDR control,gpu\n"
                                    "c,not supported,not supported,cpu\n")
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "engine_overhead.json").write_text(json.dumps({
        "device": "cpu", "threads": 2, "torch": "2.14", "model": "resnet50", "batch_size": 128, "steps": 30,
        "rounds": [{}, {}], "ratio_median": 1.01, "data_share_median": 0.002, "images_per_s_engine": 230,
        "images_per_s_bare": 232, "meets_goals": True}))
    (bench / "repro_time.json").write_text(json.dumps({
        "stages_wall_s": 600.0, "training_s": 480.0, "other_s": 120.0, "span_s": 660.0, "goal_min": 60,
        "baseline_train_images_per_s": 183.3, "models_gib": 12.3,
        "stages": [{"stage": "baseline", "wall_s": 97.1, "training_s": 70.0,
                                                          "other_s": 27.1}]}))
    text = report.results_page(tmp_path).read_text()
    assert "3 measured claims" in text and "**gpu** (2 claims)" in text and "inconclusive after FDR control: 1" in text
    assert text.index("| wide_deep/resnet18 | 4.0 |") < text.index("| baseline |")  # the headline comes first
    assert "| K He et al. | x2.2 training time |" in text
    assert "**1.010×**" in text and "meets both goals" in text and "| baseline | 97.1 | 70.0 | 27.1 |" in text
    assert "it keeps 12.3 GiB of weights under `models/`" in text


def test_opening_a_stage_leaves_its_written_results_alone(tmp_path, paths):
    from resnet_review.experiment import Stage

    metrics = tmp_path / "baseline" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text('{"profile": "smoke", "resnet50": {"per_seed": {"seed": [0, 1], "test_acc": [0.5, 0.6]}}}')
    stage = Stage("baseline", profile="smoke", reports_dir=str(tmp_path), models_dir=str(tmp_path / "models"),
                  root=paths.root)
    assert stage.reference("baseline", "resnet50")["test_acc"] == [0.5, 0.6]
    assert metrics.is_file()  # nothing logged yet, so nothing cleared


def test_relative_costs_are_multiples_of_the_reference():
    import pandas as pd
    import pytest

    table = pd.DataFrame({"label": ["base", "big"], "params_m": [20.0, 50.0], "gmacs": [0.1, 0.3],
                          "train_time_s_mean": [10.0, 15.0]})
    costs = report.relative_costs(table, "base")
    assert costs.loc["big"].to_dict() == {"params_m": 2.5, "gmacs": 3.0, "train_time_s_mean": 1.5}
    assert costs.loc["base"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(KeyError, match="no row labelled 'missing'"):
        report.relative_costs(table, "missing")


def test_claims_table_formats_each_effect_with_its_interval(tmp_path):
    stages = tmp_path / "stages"
    write_stage(stages, "baseline", 0.80)
    claims = pd.DataFrame([
        {"id": "se_helps", "section": "II.A", "claim": "SE improves accuracy", "metric": "test_acc",
         "comparison": "se/seresnet50 vs baseline/resnet50", "effect": 0.02, "ci_low": 0.01, "ci_high": 0.03,
         "seeds": 3, "verdict": "supported", "profile": "smoke"},
        {"id": "se_one_seed", "section": "II.A", "claim": "x", "metric": "test_acc", "comparison": "a vs b",
         "effect": 0.01, "ci_low": float("nan"), "ci_high": float("nan"), "seeds": 1,
         "verdict": "inconclusive at this budget", "profile": "smoke"}])
    table = report.claims_table(claims)
    assert table.loc[0, "effect [95% CI]"] == "+0.0200 [+0.0100, +0.0300]"
    assert table.loc[1, "effect [95% CI]"] == "+0.0100"
    paths = report.write_tables(report.collect(stages), tmp_path / "report", claims)
    assert "SE improves accuracy" in paths["claims_md"].read_text()
    assert not any("stage_claims" in name for name in paths)  # one claims table: claims.yaml's


def test_rows_of_another_task_are_labelled_with_their_classes(tmp_path):
    stages = tmp_path / "stages"
    write_stage(stages, "baseline", 0.80)
    folder = stages / "transfer"
    folder.mkdir()
    block = {"test_acc": {"mean": 0.9, "ci_low": 0.88, "ci_high": 0.92}, "task": "target", "train_images": 25,
             "source_classes": [0, 1, 2, 3, 4], "target_classes": [5, 6, 7, 8, 9]}
    (folder / "metrics.json").write_text(json.dumps({"profile": "smoke", "finetune_1pct": block}))
    table = report.master_table(report.collect(stages)).set_index("stage")
    assert table.loc["baseline", "task"] == "10 classes"
    assert table.loc["transfer", "task"] == "target, classes 5, 6, 7, 8, 9"
    assert table.loc["transfer", "train images"] == "25" and table.loc["baseline", "train images"] == ""  # no budget

    metrics = json.loads((stages / "baseline/metrics.json").read_text()) | {"budget": {"train_size": 2500}}
    (stages / "baseline/metrics.json").write_text(json.dumps(metrics))
    table = report.master_table(report.collect(stages)).set_index("stage")
    assert table.loc["baseline", "train images"] == "2500" and table.loc["transfer", "train images"] == "25"


def test_table1_logged_by_a_stage_is_written_by_the_report(tmp_path):
    stages = tmp_path / "stages"
    write_stage(stages, "baseline", 0.80)
    assert report.collect_table1(stages).empty
    rows = {"resolution": {"source": "H Jabnouni et al.", "limitation (Table 1)": "Poor on low resolution",
                           "measured here": "test accuracy 0.41 at 8 px vs 0.80 at 28 px"}}
    (stages / "limitations").mkdir()
    (stages / "limitations" / "metrics.json").write_text(json.dumps({"profile": "smoke", "table1": rows}))
    table1 = report.collect_table1(stages)
    assert list(table1.index) == ["resolution"] and table1.loc["resolution", "stage"] == "limitations"
    paths = report.write_tables(report.collect(stages), tmp_path / "report", table1=table1)
    text = paths["table1_md"].read_text()
    assert "H Jabnouni et al." in text and "0.41 at 8 px" in text and "limitations" not in text
    assert "note on the source" not in table1  # only rows with a questionable citation carry one
    rows["complexity"] = {"source": "K Whitehead et al.", "limitation (Table 1)": "more complexity",
                          "measured here": "x"}
    (stages / "limitations" / "metrics.json").write_text(json.dumps({"profile": "smoke", "table1": rows}))
    table1 = report.collect_table1(stages)
    assert "infants" in table1.loc["complexity", "note on the source"]
    assert table1.loc["resolution", "note on the source"] == ""


def test_only_rows_under_the_profiles_own_budget_are_compared_and_the_front_is_cheapest_first(tmp_path):
    stages = tmp_path / "stages"
    budget = {"train_size": 2500, "img_size": 28, "epochs": 2}

    def block(acc, ms, **info):
        return {"test_acc": {"mean": acc, "ci_low": acc - 0.01, "ci_high": acc + 0.01}, "latency_cpu_b1_ms": ms,
                "params_m": 10.0, **info}

    variants = {"resnet50": block(0.74, 12.0), "resnet18": block(0.78, 4.0),
                "slow_worse": block(0.70, 30.0), "fast_best": block(0.80, 3.0, train_images=2500, img_size=28),
                "low_data": block(0.95, 1.0, train_images=250, epochs=10),
                "at_14px": block(0.95, 1.0, img_size=14), "two_halves": block(0.95, 1.0, view="pair"),
                "teacher": block(0.95, 1.0, epochs=4), "target_task": block(0.95, 1.0, task="target")}
    (stages / "mixed").mkdir(parents=True)
    (stages / "mixed" / "metrics.json").write_text(json.dumps({"profile": "cpu", "budget": budget, **variants}))
    kept = report.comparable(report.collect(stages))
    assert sorted(kept["variant"]) == ["fast_best", "resnet18", "resnet50", "slow_worse"]
    table = report.pareto_table(kept)
    assert list(table["model"]) == ["mixed/fast_best"]  # cheaper and more accurate than every other row
    kept.loc[kept["variant"] == "resnet18", "latency_cpu_b1_ms"] = 2.0  # now the cheapest, less accurate
    table = report.pareto_table(kept)
    assert list(table["model"]) == ["mixed/resnet18", "mixed/fast_best"]
    assert table.iloc[1]["test accuracy (95% CI)"] == "0.8000 ± 0.0100"


def test_figures_of_many_models_stay_legible():
    """The report's figures hold every stage's models: the cost figure colours them by stage
    instead of labelling each point, the Pareto figure labels its front only; a stage's own
    few variants are labelled one by one."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from resnet_review import plots

    rows = [{"label": f"stage{i % 3}/v{i}", "test_acc_mean": 0.5 + i / 100, "test_acc_ci_low": 0.45 + i / 100,
             "test_acc_ci_high": 0.55 + i / 100, "gmacs": 0.1 * (i + 1), "latency_cpu_b1_ms": 30.0 - i,
             "params_m": 1.0 + i} for i in range(20)]
    many = pd.DataFrame(rows)
    fig = plots.cost_tradeoff(many)
    assert all(not ax.texts for ax in fig.axes)
    legend = fig.axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["stage0", "stage1", "stage2"]
    fig = plots.cost_tradeoff(many.head(5))
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(many.head(5)["label"])
    # the last row is the fastest and the most accurate: the front alone, and alone labelled
    fig = plots.pareto(many.assign(pareto=report.pareto_front(many, "latency_cpu_b1_ms", "test_acc_mean")))
    assert [t.get_text() for t in fig.axes[0].texts] == ["stage1/v19"]
    assert "dominated (19)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_one_architecture_gets_one_latency_across_stages(tmp_path):
    # the same ResNet18 timed in two stages' processes (5.6 and 9.5 ms) and a third time: every row
    # of it shows the median; the stage's own timing is kept beside it; other models keep theirs
    stages = tmp_path / "stages"
    for name, variants in {"wide_deep": {"resnet18": 5.6, "resnet101": 30.0},
                           "distillation": {"resnet18_kd": 9.5}, "teacher": {"resnet18_2x": 6.0},
                           "unlabelled": {"no_id": 7.0}}.items():
        (stages / name).mkdir(parents=True)
        blocks = {v: {"test_acc": {"mean": 0.8, "ci_low": 0.79, "ci_high": 0.81}, "latency_cpu_b1_ms": ms,
                      **({"architecture": "r101" if v == "resnet101" else "r18"} if v != "no_id" else {})}
                  for v, ms in variants.items()}
        (stages / name / "metrics.json").write_text(json.dumps({"profile": "cpu", **blocks}))
    frame = report.collect(stages).set_index("label")
    assert frame.loc["wide_deep/resnet18", "latency_cpu_b1_ms"] == 6.0
    assert frame.loc["distillation/resnet18_kd", "latency_cpu_b1_ms"] == 6.0
    assert frame.loc["distillation/resnet18_kd", "latency_cpu_b1_ms_own"] == 9.5
    assert frame.loc["wide_deep/resnet18", "latency_timings"] == 3
    assert frame.loc["wide_deep/resnet101", "latency_cpu_b1_ms"] == 30.0
    assert frame.loc["unlabelled/no_id", "latency_cpu_b1_ms"] == 7.0


def test_index_shows_what_a_chunked_campaign_still_misses(tmp_path):
    stages = tmp_path / "stages"
    write_stage(stages, "baseline", 0.80)
    out = tmp_path / "report"
    out.mkdir()
    frame = report.collect(stages)
    plain = report.write_index(tmp_path, stages, out, [], report.master_table(frame)).read_text()
    assert "Campaign progress" not in plain
    (tmp_path / "campaign.md").write_text("| stage | status | variants with every seed | missing |\n"
                                          "| se | partial | 0 | seresnet50 |\n")
    page = report.write_index(tmp_path, stages, out, [], report.master_table(frame)).read_text()
    assert "Campaign progress" in page and "| se | partial | 0 | seresnet50 |" in page


def test_index_opens_with_the_claims_and_their_forest_plot(tmp_path):
    from resnet_review.claims import ClaimSpec, measure, strongest

    stages = tmp_path / "stages"
    write_stage(stages, "baseline", 0.80)
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    for name in ("pareto_front.png", "claims_forest.png"):
        (out / "figures" / name).write_bytes(b"\x89PNG")
    frame = report.collect(stages)
    catalogue = [ClaimSpec(id="c", section="II.A", claim="x improves y", metric="test_acc",
                           treatment="baseline/resnet50", control="baseline/resnet50")]
    claims = strongest(measure(catalogue, stages).assign(source=str(stages)))
    page = report.write_index(tmp_path, stages, out, [out / "figures/pareto_front.png"], report.master_table(frame),
                              claims, out / "figures/claims_forest.png").read_text()
    order = [page.index(m) for m in ('id="claims-table"', "claims_forest.png", "pareto_front.png",
                                     "<h2>Rendered notebooks</h2>", "<h2>Master table</h2>")]
    assert order == sorted(order)
    assert "verdict after BH" in page and "x improves y" in page


def test_the_headline_is_four_numbers_per_variant_and_drops_a_gone_variant(tmp_path):
    from resnet_review.results import HEADLINE, write_headline

    metrics = {"profile": "smoke", "budget": {"train_size": 10},
               "resnet50": {"test_acc": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6},
                            "test_macro_f1": {"mean": 0.45}, "params_m": 23.5, "latency_cpu_b1_ms": 12.0,
                            "gmacs": 0.08, "corruptions": {"noise_1": 0.3}},
               "int8": {"test_acc": {"mean": 0.49}, "test_macro_f1": {"mean": None}, "params_m": 23.5},
               "claims": {"a": {"verdict": "supported"}}}
    stale = tmp_path / "headline" / "removed_variant.json"
    stale.parent.mkdir()
    stale.write_text("{}")
    folder = write_headline(tmp_path, metrics)
    assert sorted(p.name for p in folder.iterdir()) == ["int8.json", "resnet50.json"]
    assert json.loads((folder / "resnet50.json").read_text()) == {
        "test_acc": 0.5, "test_macro_f1": 0.45, "latency_cpu_b1_ms": 12.0, "params_m": 23.5}
    assert set(HEADLINE) == {"test_acc", "test_macro_f1", "latency_cpu_b1_ms", "params_m"}
    # a number the variant lacks is left out, not written as null
    assert json.loads((folder / "int8.json").read_text()) == {"test_acc": 0.49, "params_m": 23.5}


def test_the_front_times_every_traced_model_in_one_process_and_lists_each_ones_training(tmp_path):
    """Rows of one architecture (here in two stages) get one side-by-side timing from a trace;
    a row whose stage saved no trace gets none. Each front model's training is listed: images
    x epochs, its own fine-tuning and its source's."""
    import torch

    from resnet_review.claims import Results
    from resnet_review.models import build_model
    from resnet_review.profiling import save_traced

    stages, models = tmp_path / "stages", tmp_path / "models"
    budget = {"train_size": 2500, "img_size": 28, "epochs": 2}
    acc = {"test_acc": {"mean": 0.8, "ci_low": 0.79, "ci_high": 0.81}, "params_m": 1.0}
    blocks = {"baseline": {"resnet18": acc | {"architecture": "r18", "latency_cpu_b1_ms": 5.0}},
              "pruning": {"dense_finetuned": acc | {"architecture": "r18", "latency_cpu_b1_ms": 9.0,
                                                    "source": "baseline/resnet18", "finetune_epochs": 1},
                          "pruned": acc | {"architecture": "tiny", "latency_cpu_b1_ms": 1.0, "source":
                                           "baseline/resnet18", "finetune_epochs": 1},
                          "untraced": acc | {"architecture": "gone", "latency_cpu_b1_ms": 2.0}}}
    for stage, variants in blocks.items():
        (stages / stage).mkdir(parents=True)
        (stages / stage / "metrics.json").write_text(json.dumps({"profile": "cpu", "budget": budget, **variants}))
    torch.manual_seed(0)
    save_traced(build_model("resnet18", num_classes=10, in_chans=1), [(1, 28, 28)],
                models / "baseline" / "traced" / "r18.pt")
    save_traced(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), [(1, 28, 28)],
                models / "pruning" / "traced" / "tiny.pt")
    frame = report.time_side_by_side(report.comparable(report.collect(stages)), models, repeats=2, rounds=3)
    timed = frame.set_index("label")[report.SIDE_BY_SIDE]
    assert timed["baseline/resnet18"] == timed["pruning/dense_finetuned"] > timed["pruning/pruned"] > 0
    assert pd.isna(timed["pruning/untraced"])
    table = report.pareto_table(frame.dropna(subset=[report.SIDE_BY_SIDE]), x=report.SIDE_BY_SIDE,
                                results=Results(stages))
    assert list(table["model"]) == ["pruning/pruned"]  # the fastest, as accurate as every other
    assert list(table["training"]) == ["2500 images x 2 epochs + 1 fine-tuning"]
