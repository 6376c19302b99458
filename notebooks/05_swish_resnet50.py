# %% [markdown]
# # 05 · Swish-ResNet50: the activation function
#
# **What the review claims** (II.D, *Activation Function Optimisation*). Swish (`x·sigmoid(x)`,
# SiLU) "is a smooth continuous function", "allows a small number of negative weights to be
# propagated, while ReLU thresholds all negative weights to zero", and "models using Swish as the
# activation function perform better than models using ReLU".
#
# **What we run.** timm's ResNet50 with `act_layer` set to SiLU (Swish), GELU and Mish — every
# activation of the network replaced, nothing else changed — against the baseline, which is the
# ReLU network. Same images, budget, recipe and seeds; cost per activation from the profiler.

# %% tags=["parameters"]
stage_name = "swish"
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
stage.save_figure(plots.training_curves(list(results.values())), "training_curves")
stage.table()

# %% [markdown]
# ## Accuracy and cost per activation (ReLU is the baseline)

# %%
table = stage.frame(("baseline", "resnet50"))
table["label"] = table["label"].replace({"baseline/resnet50": "relu (baseline)"})
stage.save_figure(plots.variant_bars(table, ("test_acc", "test_macro_f1"), reference="relu (baseline)"),
                  "accuracy_per_activation")
stage.save_figure(plots.cost_tradeoff(table, costs=("latency_cpu_b1_ms", "train_time_s_mean",
                                                    "peak_train_memory_mb")), "accuracy_vs_cost")
report.relative_costs(table, "relu (baseline)")

# %% [markdown]
# ## The review's claims, measured
# The claim is Swish's; GELU and Mish, smooth activations of the same family, are tested the same
# way under the `gpu` profile (the `cpu` profile runs Swish alone to fit its hour, and lists them
# as not measured). Each claim's text, comparison and expected direction are its entry in
# `claims.yaml`; the effect and verdict come from the function the report uses.

# %%
display(Markdown(stage.claims_markdown()))

# %%
metrics = stage.finish()
