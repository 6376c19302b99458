# %% [markdown]
# # 02 · SE-ResNet50: channel attention in every bottleneck
#
# **What the review claims** (II.A, *Attention Mechanism Integration*). The Squeeze-and-Excitation
# module "learns the relationship between channels and adaptively adjusts the weight of each
# channel"; SE-ResNet50 "effectively improves the performance and generalisation capabilities of
# the model", and the SE module is "lightweight".
#
# **What we run.** timm's `seresnet50` (an SE block with reduction 16 after the last convolution of
# every bottleneck) against the baseline `resnet50`: the same training images, budget, recipe and
# seeds, so the difference per seed is the SE blocks'. Two claims are tested: accuracy goes up,
# and the cost is small (parameters, MACs, latency relative to ResNet50).

# %% tags=["parameters"]
stage_name = "se"
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
se = results["seresnet50"]
stage.save_figure(plots.training_curves(se), "training_curves")
stage.table()

# %% [markdown]
# ## Accuracy and cost beside the baseline

# %%
table = stage.frame(("baseline", "resnet50"))
stage.save_figure(plots.variant_bars(table, ("test_acc", "test_macro_f1"), reference="baseline/resnet50"),
                  "accuracy_vs_baseline")
stage.save_figure(plots.cost_tradeoff(table), "accuracy_vs_cost")
costs = report.relative_costs(table, "baseline/resnet50")
costs

# %% [markdown]
# ## The review's claims, measured

# %%
ratio = costs.loc["seresnet50"]
display(Markdown(stage.claims_markdown() + "\n\n" + (
    f"Cost of SE (\"lightweight\"): x{ratio['params_m']:.2f} parameters, x{ratio['gmacs']:.2f} MACs, "
    f"x{ratio['latency_cpu_b1_ms']:.2f} CPU latency at batch 1, x{ratio['train_time_s_mean']:.2f} training time per seed.")))

# %%
metrics = stage.finish()
