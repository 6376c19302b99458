# %% [markdown]
# # NN · <Technique>: <one line on what changes>
#
# *Template: copy it to `notebooks/NN_<technique>.ipynb`, set `stage_name` below to the new
# section of `params.yaml`, add the stage's line to `dvc.yaml` (see the README), and write the
# three parts in prose: the review's claim, what is run, what was found.*
#
# **What the review claims.** Quote or condense the review's sentence and name its section.
#
# **What we run.** The variants of this stage's `params.yaml` section (each a model,
# `model_kwargs`, `train` overrides, and optionally a training fraction, input size or epoch
# multiplier), trained with the baseline's data, budget and seeds, and compared with the
# baseline seed by seed.

# %% tags=["parameters"]
stage_name = "baseline"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots, report
from resnet_review.experiment import Stage

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
display(Markdown(stage.describe()))

# %% [markdown]
# ## Train over seeds

# %%
results = stage.run_variants()
stage.save_figure(plots.training_curves(list(results.values())), "training_curves")
stage.table()

# %% [markdown]
# ## Against the baseline
# Paired by seed: same images, same budget, same initialisation seed; the 95% CI is Student-t
# over the per-seed differences.

# %%
table = stage.frame(("baseline", "resnet50"))
stage.save_figure(plots.variant_bars(table, ("test_acc",), reference="baseline/resnet50"), "accuracy_vs_baseline")
report.relative_costs(table, "baseline/resnet50")

# %% [markdown]
# ## The review's claim, measured
# Every claim of `claims.yaml` whose treatment is a variant of this stage: its id, the review's
# words, the comparison (`treatment`, `control`, `metric`, `expect`), measured by the function the
# report uses. Add the claims this technique tests there; none is typed here.

# %%
display(Markdown(stage.claims_markdown()))

# %%
metrics = stage.finish()
