# %% [markdown]
# # 14 · HFF-SEnet: hierarchical feature fusion with squeeze-and-excitation
#
# **What the review proposes** (II.H.1, figures 7–10). A ResNet50 whose four layers are each
# followed by an *HFF module* — a 1x1 convolution reducing the channels, a 3x3 convolution
# extracting features, and an attention branch ("a sequence of convolution and activation
# functions") computing channel weights — then average pooling, flattening and a fully
# connected layer. It claims that "hierarchical feature fusion can help the model better capture
# feature information at different levels, thereby improving the generalisation ability and
# robustness of the model". The review trains nothing; this notebook does.
#
# **What we built** (`src/resnet_review/models/hff.py`). The text leaves three things open; each
# reading is a parameter, documented in the module:
#
# 1. *Where the HFF modules sit*: side branches reading the output of each ResNet layer; the
#    trunk stays the standard ResNet50, so a difference from the baseline is HFF's.
# 2. *Where the attention goes*: a squeeze-and-excitation branch (pool → 1x1 conv → ReLU → 1x1
#    conv → sigmoid) whose weights multiply the 3x3 features channel by channel.
# 3. *How levels fuse* (`cross_level`): bottom-up — each level's reduced map is added to the
#    previous level's HFF output (pooled to its size) before the 3x3 convolution; all levels'
#    pooled outputs are concatenated into the classifier.
#
# **Ablations**, all over the same seeds and budget: HFF at every level with cross-level fusion
# (`hff_all_levels`), without it (`hff_all_levels_no_cross`), at the last level only
# (`hff_last_level`); against the baseline ResNet50 and SE-ResNet50 (stages `baseline`, `se`).
# Generalisation is tested at low data (10% of the images, 5x the epochs, against the dropout
# stage's ResNet50 at that budget) and robustness on corrupted test images (noise, blur, low
# resolution, contrast, occlusion; `resnet_review.robustness`).

# %% tags=["parameters"]
stage_name = "hff"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots, report
from resnet_review.experiment import Stage

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
baseline = stage.reference("baseline", "resnet50")
se = stage.reference("se", "seresnet50")
low_data_baseline = stage.reference("dropout", "low_data_drop_rate_0")
display(Markdown(stage.describe()))

# %% [markdown]
# ## The architecture, drawn from the code
# Every block one forward pass calls, in order, with its output shape (replacing the review's
# figures 7–9): the trunk first, then the four HFF modules reading its layers, then the head.

# %%
model = stage.model_factory(**stage.config.variants["hff_all_levels"].model_kwargs)()
stage.save_figure(plots.architecture(model, stage.input_shapes()), "architecture")

# %% [markdown]
# ## Train over seeds

# %%
results = stage.run_variants()
stage.table()

# %% [markdown]
# ## Accuracy, robustness and cost beside ResNet50 and SE-ResNet50

# %%
table = stage.frame(("baseline", "resnet50"), ("se", "seresnet50"), ("dropout", "low_data_drop_rate_0"))
stage.save_figure(plots.variant_bars(table, ("test_acc", "corruption_acc", "train_val_gap"),
                                     reference="baseline/resnet50"), "accuracy_robustness_gap")
stage.save_figure(plots.cost_tradeoff(table[table["train_fraction"].fillna(1.0) == 1.0]), "accuracy_vs_cost")
costs = report.relative_costs(table, "baseline/resnet50")
costs

# %% [markdown]
# Accuracy under each corruption (mean over seeds), and what the corrupted images look like:

# %%
corruption_columns = [c for c in table.columns if c.startswith("corruptions_")]
display(table.set_index("label")[corruption_columns].round(3))
stage.save_figure(plots.image_rows(stage.corrupted_test(stage.splits)), "corrupted_examples")

# %% [markdown]
# ## The review's claims, measured
# Each effect is paired by seed with its control. "Generalisation" is read two ways: test
# accuracy, and the train−validation gap at low data (expected to shrink, sign −1).
# "Robustness" is the mean accuracy over the corrupted test sets.

# %%
cost = costs.loc["hff_all_levels"]
display(Markdown(stage.claims_markdown() + "\n\n" + (
    f"Cost of HFF-SEnet: x{cost['params_m']:.2f} parameters, x{cost['gmacs']:.2f} MACs, "
    f"x{cost['latency_cpu_b1_ms']:.2f} CPU latency at batch 1, x{cost['train_time_s_mean']:.2f} training time per seed.")))

# %%
metrics = stage.finish()
