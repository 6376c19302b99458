# %% [markdown]
# # 99 · Report: every stage in one table
#
# This notebook reads the `metrics.json` of every stage under `reports/stages/` — whatever
# stages exist, without a list of them — and writes the master table, the table of the review's
# claims (`claims.yaml`, each measured here) and of every comparison the notebooks tested (CSV
# and Markdown), the accuracy-versus-cost figure, the accuracy-versus-latency Pareto front and `reports/index.html`, which links every
# rendered notebook.
# Accuracies are means over seeds with 95% Student-t confidence intervals; costs are measured
# once per architecture by the shared profiler.

# %% tags=["parameters"]
stage_name = "report"
profile = "smoke"
reports_dir = "reports/scratch"
models_dir = "models/scratch"
stages_dir = "reports/scratch/stages"

# %%
from pathlib import Path

from IPython.display import Markdown, display

from resnet_review import claims as review_claims
from resnet_review import plots, report
from resnet_review.config import Paths, load_params

paths = Paths()
stages = paths.root / stages_dir
out = paths.stage_reports(stage_name, reports_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)
collected = report.collect(stages)
# the claims on every run at hand (this profile's, a gpu campaign's, an archived gpu run's), each
# tiered against the profiles as params.yaml writes them; per claim its strongest evidence
written = load_params(paths.params).budgets_written()
sources = report.result_sources(paths.reports, stages)
measured = review_claims.measure_sources(review_claims.load_catalogue(paths.root / "claims.yaml"), sources, written)
claims = review_claims.strongest(measured)
table1 = report.collect_table1(stages)
print(f"{len(collected)} variants from {collected['stage'].nunique() if len(collected) else 0} stages in {stages}")

# %% [markdown]
# ## Master table

# %%
written = report.write_tables(collected, out, claims, table1)
table = report.master_table(collected)
display(Markdown(written["md"].read_text()))

# %% [markdown]
# ## The review's claims, measured
# `claims.yaml` lists every claim of the review with the comparison that tests it; each is
# measured here from the stages' per-seed results: the paired (same seeds) difference between a
# treatment and its control, its 95% CI over seeds, and a verdict — *supported* when the CI excludes
# zero on the claimed side (or, for a claim of no loss, lies above minus its margin), *not
# supported* when it excludes zero on the other, *inconclusive at this budget* when it holds zero,
# and *not measured* (with the reason) when its stage or variant has not run under this profile.
# With about fifty claims, some decisive verdicts are expected by chance: each verdict is also given
# after Benjamini–Hochberg control of the false discovery rate at 5% over the claims of one run (a
# decisive verdict whose q-value exceeds 0.05 becomes *inconclusive after FDR control*). Every row
# names the tier of its evidence: *exploratory* (cpu, small budget), *full-data short schedule*
# (gpu, fewer epochs than the gpu profile), *paper-grade* (the gpu profile as written); the
# strongest run at hand is shown, the others beside it. Where both sides recorded their per-image test
# predictions (`predictions.json`), the interval counts the sampling of the test images as well
# as the seeds (column *CI counts*, the seeds-only interval beside it); elsewhere the seeds only.

# %%
display(Markdown(written["claims_md"].read_text()))
if len(claims):
    display(Markdown("Verdicts after FDR control: " + ", ".join(f"{v}: {n}" for v, n in
                                                                claims["verdict_bh"].value_counts().items())))
    fig = plots.forest(measured, review_claims.TIERS)
    forest = out / "figures" / "claims_forest.png"
    fig.savefig(forest, dpi=110, bbox_inches="tight")
else:
    forest = None

# %% [markdown]
# ## The review's Table 1, measured
# Table 1 of the review lists ResNet50's limitations from the literature; the `limitations` stage
# (notebook 16) measures each on the baseline under this profile.

# %%
display(Markdown(written["table1_md"].read_text() if "table1_md" in written
                 else "*No stage has measured Table 1 under this profile (the `limitations` stage).*"))

# %% [markdown]
# ## Accuracy against cost
# Each point is one stage variant, coloured by its stage; vertical bars are the 95% CI over seeds.

# %%
figures = []
if len(collected):
    fig = plots.cost_tradeoff(collected)
    figures.append(out / "figures" / "accuracy_vs_cost.png")
    fig.savefig(figures[-1], dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Accuracy against CPU latency: the Pareto front
# The headline figure. Every model trained under the profile's own budget — all ten classes, every
# training image, the profile's epochs and input size — against its CPU latency at batch 1 (a
# low-data, low-resolution, longer-trained or 5-class variant answers another question and is left
# out). A model on the front is one that no other model beats on both accuracy and latency. The
# latencies are timed here, every model in turn in this one process (the TorchScript trace its
# stage saved, so that no Python overhead differs between them), because timings from different
# processes differ by tens of percent on a shared machine; where a trace is missing, the stages'
# own timings are used for every model and the caption says so. Each model's training (images,
# epochs, extra fine-tuning, teacher) is listed beside it: they share the budget's images and
# epochs, not always its compute.

# %%
comparable = report.comparable(collected)
if len(comparable):
    budget = load_params(paths.params).budget
    comparable = report.time_side_by_side(comparable, paths.root / models_dir, repeats=budget.latency_repeats)
    side_by_side = comparable[report.SIDE_BY_SIDE].notna().all()
    x = report.SIDE_BY_SIDE if side_by_side else "latency_cpu_b1_ms"
    comparable = comparable.assign(pareto=report.pareto_front(comparable, x, "test_acc_mean"))
    fig = plots.pareto(comparable, x=x)
    figures.insert(0, out / "figures" / "pareto_front.png")
    fig.savefig(figures[0], dpi=120, bbox_inches="tight")
    headline = report.pareto_table(comparable, x=x, results=review_claims.Results(stages))
    (out / "pareto_front.md").write_text(headline.to_markdown(index=False) + "\n", encoding="utf-8")
    untraced = comparable.loc[comparable[report.SIDE_BY_SIDE].isna(), "label"]
    timed = ("every model timed side by side in this process" if side_by_side else
             f"each model timed by its own stage ({len(untraced)} of {len(comparable)} have no trace, e.g. "
             f"{', '.join(untraced[:3])})")
    (out / "pareto_timing.txt").write_text(timed + "\n", encoding="utf-8")
    display(Markdown(f"Latency: {timed}.\n\n" + headline.to_markdown(index=False)))

# %%
index = report.write_index(paths.root / reports_dir, stages, out, figures, table, claims, forest)
results = report.results_page(paths.root / reports_dir)  # the page the README links
profiles = sorted(collected["profile"].unique()) if len(collected) else []
display(Markdown(f"Wrote `{index.relative_to(paths.root)}` and the tables in `{out.relative_to(paths.root)}`. "
                 f"Profiles in these results: {', '.join(profiles) or 'none'}"
                 + ("; **these are small-budget numbers**, not paper-grade." if set(profiles) - {"gpu"} else ".")))
