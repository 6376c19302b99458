# %% [markdown]
# # 09 · Data augmentation: which transforms reduce overfitting, and at what cost
#
# **What the review claims** (Abstract; Table 1). "Enhanced data augmentation techniques" are
# among the simple solutions that improve ResNet50, whose listed weaknesses include overfitting
# "when the amount of data is small".
#
# **What we run.** Three families, as the engine's `batch_transform` hook on the training device
# (`techniques.augmentation.augmentation`): RandAugment (torchvision `transforms.v2`, on uint8
# pixels, one random policy per batch), Mixup/CutMix (timm: one of the two per batch, soft targets that sum to 1) and
# RandomErasing (timm, per image) — each alone and all combined. At **low data** (20% of the
# training images, 3x the epochs, so that the control overfits) each is paired by seed with the
# un-augmented `low_data_none`; at full data (gpu profile) with the baseline. Overfitting is the
# train-validation gap: accuracy on training images (eval mode) minus validation accuracy.
# Each transform's speed is timed alone on training batches against a training step.

# %% tags=["parameters"]
stage_name = "augmentation"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.experiment import Stage
from resnet_review.techniques import augmentation

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
display(Markdown(stage.describe()))

# %% [markdown]
# ## What each augmentation costs the training loop
#
# Images per second of each transform alone, of a plain training step of ResNet50 by the engine,
# and the slowdown of an epoch that applies the transform to every batch.

# %%
speed = augmentation.augmentation_throughput(stage, {"randaugment": ["randaugment"], "mixup_cutmix": ["mixup", "cutmix"],
                                                 "random_erasing": ["random_erasing"],
                                                 "all": ["randaugment", "mixup", "cutmix", "random_erasing"]})
stage.log_metrics(throughput=speed.round(4).to_dict(orient="index"))
speed.round(3)

# %% [markdown]
# ## Train over seeds

# %%
results = augmentation.run_augmentation(stage)
stage.table()

# %% [markdown]
# ## Accuracy and overfitting, per augmentation

# %%
table = stage.frame(("baseline", "resnet50"))
stage.save_figure(plots.variant_bars(table, metrics=("test_acc", "train_val_gap", "corruption_acc")),
                  "accuracy_and_gap")
columns = ["test_acc_mean", "test_acc_ci_low", "test_acc_ci_high", "train_val_gap_mean", "corruption_acc_mean",
           "train_images_per_s_mean"]
table.set_index("label")[[c for c in columns if c in table]].round(4)

# %% [markdown]
# ## The review's claims, measured
#
# Each augmentation against the control of its data regime, paired by seed.

# %%
display(Markdown(stage.claims_markdown()))

# %%
metrics = stage.finish()
