# %% [markdown]
# # 03 · ResNeXt50 (32x4d): grouped convolutions at about equal cost
#
# **What the review claims** (II.B, *Residual Block Design Optimisation*). ResNeXt splits the
# bottleneck's 3x3 convolution into 32 parallel branches (the "cardinality"), which "improves the
# expressive ability of the model" and "model performance while maintaining computational
# efficiency".
#
# **What we run.** timm's `resnext50_32x4d` against the baseline `resnet50` on the same images,
# budget and seeds. Its parameter and MAC counts are within a few per cent of ResNet50's, so an
# accuracy difference at about equal cost is the test of the claim; the CPU latency shows what
# grouped convolutions cost in practice on this hardware.

# %% tags=["parameters"]
stage_name = "resnext"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots, report
from resnet_review.experiment import Stage

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
baseline = stage.reference("baseline", "resnet50")
display(Markdown(stage.describe()))

# %% [markdown]
# ## Train over seeds

# %%
results = stage.run_variants()
resnext = results["resnext50_32x4d"]
stage.save_figure(plots.training_curves(resnext), "training_curves")
stage.table()

# %% [markdown]
# ## Accuracy at (about) equal parameters and MACs

# %%
table = stage.frame(("baseline", "resnet50"))
stage.save_figure(plots.cost_tradeoff(table, costs=("params_m", "gmacs", "latency_cpu_b1_ms", "train_time_s_mean")),
                  "accuracy_vs_cost")
costs = report.relative_costs(table, "baseline/resnet50")
costs

# %% [markdown]
# ## The review's claims, measured

# %%
ratio = costs.loc["resnext50_32x4d"]
display(Markdown(stage.claims_markdown() + "\n\n" + (
    f"\"Maintaining computational efficiency\": x{ratio['params_m']:.2f} the parameters and x{ratio['gmacs']:.2f} "
    f"the MACs of ResNet50, at x{ratio['latency_cpu_b1_ms']:.2f} its CPU latency (batch 1) and x{ratio['train_time_s_mean']:.2f} its "
    "training time per seed. " + ("Equal MACs do not mean equal speed here: grouped convolutions run fewer "
    "operations per second than dense ones on this hardware." if ratio['latency_cpu_b1_ms'] > 1.1 else
    "On this hardware equal MACs also mean about equal speed."))))

# %%
metrics = stage.finish()
