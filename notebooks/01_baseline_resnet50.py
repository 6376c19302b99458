# %% [markdown]
# # 01 · Baseline: timm ResNet50 on Fashion-MNIST
#
# **What the review says.** ResNet50 is "a classic backbone network" whose residual structure
# gives "excellent performance" in image classification; its Table 1 also lists what it does
# poorly: low-resolution images, small data sets (overfitting), and a large compute and memory
# cost. Every technique of the review is a change to this model, so every later stage is
# compared with the numbers measured here: same images, same budget, same seeds.
#
# **What we run.** timm's `resnet50` (23.5 M parameters, no pretrained weights), 1 input
# channel, 10 classes, trained from scratch with the shared recipe of `params.yaml` once per
# seed of the profile, then evaluated on the Fashion-MNIST test set. Fashion-MNIST's 28 px
# images are exactly the low-resolution regime the review flags.

# %% tags=["parameters"]
stage_name = "baseline"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
import pandas as pd
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.experiment import Stage

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
display(Markdown(stage.describe()))

# %% [markdown]
# ## Training over seeds
# One fresh model per seed; the engine logs loss, accuracy, learning rate and images/s per epoch
# to dvclive (`dvc plots show` draws them).

# %%
result = stage.run("resnet50")
stage.table()

# %%
stage.save_figure(plots.training_curves(result), "training_curves")

# %% [markdown]
# ## Where the errors are
# Confusion matrix of the first seed (rows: true class) and per-class accuracy over all seeds.

# %%
first = result.runs[0].test
stage.save_figure(plots.confusion_matrix(first), "confusion_matrix")

# %%
stage.save_figure(plots.per_class_accuracy({"resnet50": [r.test for r in result.runs]}, first.classes),
                  "per_class_accuracy")

# %% [markdown]
# ## What it costs
# Parameters and MACs from PyTorch's flop counter; CPU latency is the median of repeated
# eval-mode forward passes after warm-up; peak memory is one forward + backward pass.

# %%
pd.Series({**result.profile.scalars(), "memory measured as": result.profile.peak_train_memory_method})

# %% [markdown]
# ## What we see

# %%
acc = result.estimate("test_acc")
gap = result.estimate("train_val_gap")
worst = sorted(zip(first.per_class_accuracy, first.classes))[:2]
display(Markdown(f"""
* Test accuracy **{acc}** (mean ± 95% CI half-width over {acc.n} seeds); macro-F1
  {result.estimate('test_macro_f1')}; calibration error (ECE) {result.estimate('test_ece')}.
* Hardest classes for seed {result.runs[0].seed}: {worst[0][1]} ({worst[0][0]:.2f}) and {worst[1][1]} ({worst[1][0]:.2f}).
* Train − validation accuracy gap after the last epoch (training accuracy measured in eval mode): {gap}.
* Cost: {result.profile.params / 1e6:.1f} M parameters, {result.profile.macs / 1e9:.3f} GMACs per
  {stage.budget.img_size} px image, {result.profile.latency_ms['cpu_b1']:.1f} ms per image on
  {result.profile.threads} CPU threads, {result.profile.checkpoint_mb:.0f} MB of weights.

{stage.budget_note()}
"""))

# %%
metrics = stage.finish()
