# %% [markdown]
# # 08 · Distilled-ResNet50: does a teacher's knowledge make the student better?
#
# **What the review claims** (II.G, *Introducing Knowledge Distillation*). Distilled-ResNet50
# "retains the basic architecture of ResNet50, but introduces an additional loss function": the
# cross-entropy with the labels plus the KL divergence to the teacher's outputs, which lets "a
# small student model learn the knowledge of a large teacher model", improving accuracy "while
# keeping the model size constant".
#
# **What we run.** Each seed's student learns from the same seed's teacher (the `teacher` stage,
# notebook 08a) with the loss
# $\alpha\,T^2\,\mathrm{KL}(p^T_\text{teacher}\,\|\,p^T_\text{student}) + (1-\alpha)\,\mathrm{CE}$
# (`techniques.distillation.distill_loss`, the engine's `loss_fn` hook), on the baseline's images,
# epochs and seeds. Controls are the same students trained alone under this budget: ResNet50 from the
# `baseline` stage, ResNet18 from `wide_deep` — paired by seed, not retrained. A small sweep of
# temperature $T$ and $\alpha$ runs on the cheap student.

# %% tags=["parameters"]
stage_name = "distillation"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.experiment import Stage
from resnet_review.techniques import distillation

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
teacher_stage, teacher_variant, _ = distillation.teacher_of(stage)
display(Markdown(stage.describe() + f"\n\nTeacher: `{teacher_stage}/{teacher_variant}`, "
                 f"T = {stage.config.temperature}, alpha = {stage.config.alpha} unless a variant says otherwise."))

# %% [markdown]
# ## Train the students over seeds

# %%
results = distillation.run_distillation(stage)
stage.table()

# %% [markdown]
# ## Students, their controls and the teacher: accuracy against size and speed

# %%
controls = {(v.scratch.stage, v.scratch.variant) for n, v in stage.config.variants.items() if n in results and v.scratch}
table = stage.frame((teacher_stage, teacher_variant), *sorted(controls))
stage.save_figure(plots.cost_tradeoff(table, costs=("params_m", "latency_cpu_b1_ms", "train_time_s_mean")),
                  "accuracy_vs_cost")
columns = ["test_acc_mean", "test_acc_ci_low", "test_acc_ci_high", "params_m", "latency_cpu_b1_ms",
           "train_time_s_mean", "temperature", "alpha"]
table.set_index("label")[[c for c in columns if c in table]].round(4)

# %% [markdown]
# ## The review's claims, measured

# %%
display(Markdown(stage.claims_markdown()))

# %%
metrics = stage.finish()
