# %% [markdown]
# # 00 · The data: Fashion-MNIST
#
# Every experiment of this project trains on Fashion-MNIST (Xiao et al., 2017): 70 000 grey
# 28×28 images of ten clothing classes, 60 000 for training and 10 000 for testing. The raw IDX
# files come from Debian's `dataset-fashion-mnist` package, are tracked by `data.dvc`, and the
# `prepare` stage verifies the md5 of every decompressed file before it splits the training
# images into a training and a validation part (seeded). The test set is never used for
# selection. This notebook shows the images, the class balance of every split, and what each
# profile uses.

# %% tags=["parameters"]
stage_name = "data_overview"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from matplotlib import pyplot as plt

from resnet_review import plots
from resnet_review.data import CLASSES, load_prepared
from resnet_review.experiment import Stage

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
prepared = load_prepared(stage.paths.prepared)
prepared["meta"]

# %% [markdown]
# ## Samples
# Eight images of every class from the profile's training subset, at the profile's resolution.

# %%
stage.save_figure(plots.sample_grid(stage.splits.train, title=f"{stage.budget.img_size} px"), "sample_grid")

# %% [markdown]
# ## Class balance and split sizes
# The full splits are balanced by construction of the data set; the profile's subsets are drawn
# class-stratified (seed `data_seed`), so they stay balanced.

# %%
rows = []
for split in ("train", "val", "test"):
    full = prepared[f"{split}_labels"]
    subset = getattr(stage.splits, split).targets.cpu()
    for c, name in enumerate(CLASSES):
        rows.append({"split": split, "class": name, "full split": int((full == c).sum()),
                     f"{stage.params.profile} subset": int((subset == c).sum())})
counts = pd.DataFrame(rows)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=False)
for ax, column in zip(axes, ["full split", f"{stage.params.profile} subset"]):
    sns.barplot(counts, x="class", y=column, hue="split", ax=ax, legend=ax is axes[-1])
    ax.tick_params(axis="x", rotation=40)
    ax.set_title(column)
sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1, 1))
fig.tight_layout()
stage.save_figure(fig, "class_balance")
counts.pivot_table(index="class", columns="split", values=["full split", f"{stage.params.profile} subset"])

# %%
sizes = {f"{split}_full": len(prepared[f"{split}_labels"]) for split in ("train", "val", "test")}
sizes |= {f"{split}_used": len(getattr(stage.splits, split)) for split in ("train", "val", "test")}
imbalance = counts.groupby("split")[f"{stage.params.profile} subset"].agg(lambda s: s.max() / s.min())
stage.log_metrics(**sizes, max_class_imbalance=float(imbalance.max()))
display(Markdown(
    f"Profile **{stage.params.profile}** trains on {sizes['train_used']} of {sizes['train_full']} training images, "
    f"validates on {sizes['val_used']} of {sizes['val_full']} and tests on {sizes['test_used']} of "
    f"{sizes['test_full']}. The largest/smallest class ratio in any subset is {imbalance.max():.2f}."))

# %%
metrics = stage.finish()
