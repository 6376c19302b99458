# %% [markdown]
# # 06 · Dropout-ResNet50: does dropout reduce overfitting?
#
# **What the review claims** (II.E, *Introducing Regularisation Techniques*). Dropout "can reduce
# the complex co-adaptation relationships between neurons and enhance the generalisation ability
# of the model", placed "before the fully connected layer of the network, or after the output of
# each residual block", to "reduce the risk of overfitting, and improve the robustness".
#
# **What we run.** The first placement the review names, and a stand-in for the second, as timm's
# ResNet50 keyword arguments: `drop_rate` (dropout before the classifier; 0, 0.2, 0.5) and
# `drop_path_rate` (stochastic depth: each residual branch dropped at random, 0.1). Stochastic depth
# is not dropout after each residual block (it drops a whole branch per example, not units of its
# output); it is the regulariser of that place timm ships, so the second placement is approximated,
# not tested as written. Overfitting is measured as the
# **train − validation accuracy gap** (training accuracy measured in eval mode, on as many training
# images as validation has, so dropout is off on both sides), in two regimes:
#
# * **low data**: 10% of the profile's training images, trained for 5x the epochs (so the model
#   sees each image many times and can overfit) — every low-data variant shares that budget;
# * **full data**: the profile's budget; the baseline is the `drop_rate = 0` control.

# %% tags=["parameters"]
stage_name = "dropout"
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
stage.table()

# %% [markdown]
# ## Gap and accuracy per regime

# %%
table = stage.frame(("baseline", "resnet50"))
stage.save_figure(plots.variant_bars(table, ("train_val_gap", "test_acc"), reference="baseline/resnet50"),
                  "gap_and_accuracy")
table.set_index("label")[["train_fraction", "epochs", "train_acc_mean", "val_acc_mean", "train_val_gap_mean",
                          "test_acc_mean"]].round(4)

# %% [markdown]
# ## The review's claims, measured
# "Reduces overfitting" predicts a *smaller* gap (expected sign −1); "improves generalisation"
# a higher test accuracy. Each dropout variant is paired by seed with the no-dropout control of
# its own regime.

# %%
display(Markdown(stage.claims_markdown()))

# %%
metrics = stage.finish()
