# %% [markdown]
# # 16 · ResNet50's limitations (the review's Table 1), measured
#
# **What the review claims** (I, Table 1). From the literature it lists ResNet50's shortcomings:
# poor accuracy on low-resolution images; overfitting when data are few; training time and
# compute that grow with depth; complexity that lowers training error but not test error; deep
# structures that do poorly on some tasks; heavy computation and memory; lost detail; speed.
#
# **What we run.** Each row becomes a measurement on the baseline's data, budget and seeds: the
# baseline ResNet50 trained at smaller input sizes (`res_*`) and on smaller shares of the training
# images (`data_*`, each trained for about as many optimiser steps as the dropout stage's 10%
# control, which is reused); the ResNets of several depths are the `wide_deep` stage's, read, not
# retrained; accuracy under blur and down-then-up-sampling is the robustness evaluation every model
# gets; CPU latency and training memory against batch size need no training.

# %% tags=["parameters"]
stage_name = "limitations"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.experiment import Stage
from resnet_review.techniques import limitations

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
display(Markdown(stage.describe()))

# %% [markdown]
# ## Train over seeds, read the other stages, time the batch sizes

# %%
measured = limitations.run_limitations(stage)
stage.log_metrics(batch_sweep=measured.batches.round(4).to_dict(orient="index"))
stage.table()

# %% [markdown]
# ## Low resolution: accuracy against input size

# %%
stage.save_figure(plots.trend(measured.resolution, "img_size", ("test_acc", "corruption_acc"),
                              xlabel="input size (px)"), "accuracy_vs_resolution")

# %% [markdown]
# ## Little data: overfitting against the share of training images

# %%
stage.save_figure(plots.trend(measured.data, "train_fraction", ("test_acc", "train_val_gap"), logx=True,
                              xlabel="share of the training images"), "overfitting_vs_data")

# %% [markdown]
# ## Depth: training time, compute, memory and accuracy

# %%
stage.save_figure(plots.trend(measured.depth, "depth", ("train_time_s", "gmacs", "peak_train_memory_mb",
                                                        "test_acc"), xlabel="layers"), "cost_vs_depth")
measured.depth.set_index("label")[["params_m", "gmacs", "train_time_s_mean", "peak_train_memory_mb",
                                    "train_acc_mean", "test_acc_mean"]].round(3)

# %% [markdown]
# ## Speed and memory against batch size (CPU, no training)

# %%
measured.batches.round(2)

# %% [markdown]
# ## Table 1, with what this profile measured

# %%
stage.log_metrics(table1=measured.table.to_dict(orient="index"))  # the report shows it too
display(Markdown(measured.table.to_markdown(index=False)))

# %% [markdown]
# ## The claims, measured

# %%
display(Markdown(stage.claims_markdown()))

# %%
metrics = stage.finish()
