# %% [markdown]
# # 08a · The teacher of knowledge distillation
#
# **Why a stage of its own.** The review's Distilled-ResNet50 (II.G) learns from "a large teacher
# model". The teacher is trained here, once per seed, and its weights (`models/teacher`) are a DVC
# dependency of the `distillation` stage (notebook 08): changing the teacher re-runs the students,
# changing a student does not re-train the teacher.
#
# **Which teacher.** Under the `gpu` profile the review's kind of teacher, `wide_resnet50_2`.
# Under the small `cpu` budget bigger networks score *lower* than small ones (see the `wide_deep`
# stage), so a large teacher would teach worse answers; the teacher there is the best model of
# that budget, ResNet18, trained twice as long. `params.yaml` (`teacher:`) keeps one variant
# per profile.

# %% tags=["parameters"]
stage_name = "teacher"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.experiment import Stage

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
display(Markdown(stage.describe()))

# %% [markdown]
# ## Train the teacher over seeds

# %%
results = stage.run_variants()
stage.save_figure(plots.training_curves(list(results.values())), "training_curves")
stage.table()

# %% [markdown]
# The students of notebook 08 are compared with this table: a teacher is only worth distilling
# from if it is more accurate than the student trained alone.

# %%
display(Markdown(stage.budget_note()))
metrics = stage.finish()
