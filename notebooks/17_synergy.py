# %% [markdown]
# # 17 · The techniques together: which gains add up, which overlap, and what compression costs
#
# **What the review claims** (Conclusion). Having surveyed attention (II.A), activation functions
# (II.D), knowledge distillation (II.G), data augmentation and compression (Abstract), the review
# concludes that ResNet50 is best optimised by combining them, and that a combined model can then
# be pruned and quantised for deployment. Whether the gains of separate techniques add up is not
# shown: two techniques may fix the same weakness (their gains overlap) or work against each other.
#
# **What we run.** All cells train on 10% of the training images for 5x the epochs, where the
# plain ResNet50 overfits (the dropout stage's low-data control, reused as the cell with no
# technique, checked to share the images and epochs). On the profile's seeds:
#
# * a 2x2 factorial of SE attention x RandAugment: each gain alone and on top of the other, and
#   the interaction `both - SE - RandAugment + none`, paired by seed. The gains *add up* when its
#   95% CI holds 0, *reinforce* each other above 0, *overlap* below, and *conflict* when the pair
#   is also below the better technique alone;
# * a step-wise path, one technique added at a time up to the full combination: SE-ResNet50 with
#   Swish (SiLU) + RandAugment + distillation from the `teacher` stage's model of the same seed
#   (trained on all the profile's images: part of what the student gains is that teacher's data);
# * the full combination compressed without retraining it: int8 post-training quantisation,
#   structured pruning to −50% MACs with a short fine-tune by the same techniques on the same
#   images, and both; speed-ups timed side by side. The pruned models are compared with the full
#   combination fine-tuned alike without pruning (`full_finetuned`), so that pruning is not
#   credited or blamed for the extra epochs;
# * the accuracy against CPU-latency Pareto front of every model here, the control and the baseline
#   (which sees 10x the images).

# %% tags=["parameters"]
stage_name = "synergy"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.experiment import Stage
from resnet_review.techniques import synergy

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
control = f"{stage.config.control.stage}/{stage.config.control.variant}"
display(Markdown(stage.describe() + f"\n\nCell with no technique: `{control}` (read). Distillation: "
                 f"T = {stage.config.temperature}, alpha = {stage.config.alpha}."))

# %% [markdown]
# ## Train the cells over seeds, compress the full combination

# %%
found = synergy.run_synergy(stage)
stage.table()

# %% [markdown]
# ## The 2x2 factorial: SE attention x RandAugment
#
# Gains in test accuracy, paired by seed (mean and 95% CI); the verdict of a gain is whether it
# is above zero, that of the interaction how the two techniques combine.

# %%
f = stage.config.factorial
cells = [control, f.first, f.second, f.both]
table = found.pareto.set_index("label").loc[cells].reset_index()
stage.save_figure(plots.variant_bars(table, ("test_acc", "train_val_gap"), reference=control), "factorial")
display(Markdown(f"SE x RandAugment: the gains **{found.combination}**."))
found.factorial.round(4)

# %% [markdown]
# ## Step by step: one technique at a time

# %%
steps = [control, *found.steps.index]
table = found.pareto.set_index("label").loc[steps].reset_index()
stage.save_figure(plots.variant_bars(table, ("test_acc", "train_val_gap", "corruption_acc"), reference=control),
                  "steps")
found.steps.round(4)

# %% [markdown]
# ## The full combination compressed
#
# Accuracy change from each model's control (`compared_with`, paired by seed: the uncompressed
# cell for int8, its dense fine-tune for the pruned models) and CPU speed-ups over the uncompressed
# cell measured side by side in this process (median over timing rounds).

# %%
found.compression.round(4)

# %% [markdown]
# ## Accuracy against CPU latency: the Pareto front
#
# A model is on the front when no other is both faster (batch 1, CPU) and more accurate.

# %%
stage.save_figure(plots.pareto(found.pareto), "pareto_front")
found.pareto.set_index("label")[["test_acc_mean", "test_acc_ci_low", "test_acc_ci_high", "latency_cpu_b1_ms",
                                 "gmacs", "pareto"]].round(4)

# %% [markdown]
# ## The review's claims, measured

# %%
if found.interaction is not None:
    stage.estimate(f"{f.first}_x_{f.second}_add_up", found.interaction,
                   metric=f"test_acc interaction ({f.both} - {f.first} - {f.second} + none)", unit="paired seeds")
for name in found.compressed:
    stage.estimate(f"{name}_speeds_up_cpu", found.speedups[name]["cpu_b1"].shifted(-1), metric="speedup_cpu_b1 - 1")
display(Markdown(stage.claims_markdown()))

# %%
metrics = stage.finish()
