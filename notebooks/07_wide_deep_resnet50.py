# %% [markdown]
# # 07 · Wide and deep ResNets: what each step of width or depth buys and costs
#
# **What the review claims** (II.F, *Optimising Network Width and Depth*). Wide-ResNet50, with
# "twice" the channels per block, "can capture richer feature information"; Deep-ResNet50 "improves
# the performance of the model by increasing the depth of the network while maintaining the
# efficiency". Table 1 notes the other side: "training time and computing resources" grow with
# depth.
#
# **What we run.** timm's `resnet18`, `resnet34`, `resnet101`, `resnet152` and `wide_resnet50_2`
# beside the baseline `resnet50`, on the same images, budget and seeds: accuracy against
# parameters, MACs, training time and peak training memory — the scaling curve and the price of
# each step.

# %% tags=["parameters"]
stage_name = "wide_deep"
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
# Deeper and wider networks take longer per seed; every one gets the same number of epochs.

# %%
results = stage.run_variants()
stage.table()

# %% [markdown]
# ## The scaling curve

# %%
table = stage.frame(("baseline", "resnet50"))
order = ["resnet18", "resnet34", "baseline/resnet50", "resnet101", "resnet152", "wide_resnet50_2"]
table = table.set_index("label").loc[[o for o in order if o in set(table["label"])]].reset_index()
stage.save_figure(plots.cost_tradeoff(table, costs=("params_m", "gmacs", "train_time_s_mean",
                                                    "peak_train_memory_mb")), "scaling_curve")
report.relative_costs(table, "baseline/resnet50")

# %% [markdown]
# ## The review's claims, measured

# %%
display(Markdown(stage.claims_markdown()))

# %%
metrics = stage.finish()
