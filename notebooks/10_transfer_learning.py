# %% [markdown]
# # 10 · Transfer learning: does a pretrained ResNet50 need less data?
#
# **What the review claims** (Abstract). Transfer learning is named among the "advanced training
# techniques" that enhance ResNet50's performance; the review's own novel model (II.H) starts from a
# pretrained ResNet50. The usual form of the claim: starting from weights learned on another task
# improves accuracy, most of all when the new task has little data, i.e. it reduces the data needed.
#
# **What we run.** No hub weights are reachable offline, so the source task is in-domain: per seed, a
# ResNet50 is trained on Fashion-MNIST classes 0-4 (T-shirt, trouser, pullover, dress, coat) with the
# profile's budget (`source_pretrain`). It is then adapted to the five *other* classes (sandal, shirt,
# sneaker, bag, ankle boot) with 1% and 10% of their training images of the profile, by four methods,
# each with the same recipe, images, steps and seeds:
#
# * `scratch` — a fresh ResNet50 on the target images alone: the control;
# * `finetune` — every weight starts from the source model and is trained;
# * `linear_probe` — the source features are frozen, only a new classifier is trained;
# * `frozen_early` — stem, `layer1` and `layer2` frozen (batch norms too), the rest trained.
#
# With `pretrained_path` set in params.yaml (a local checkpoint, e.g. timm ImageNet weights) that
# checkpoint is the source instead: its RGB stem is adapted to grey input, its classifier replaced.

# %% tags=["parameters"]
stage_name = "transfer"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.experiment import Stage
from resnet_review.techniques import transfer

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
cfg = stage.config
display(Markdown(stage.describe()))
display(Markdown(f"Source classes {cfg.source_classes}, target classes {cfg.target_classes}; "
                 + "; ".join(f"`{n}`: {f.train_fraction:.0%} of the target images, {f.epochs_scale:g}x the epochs"
                             for n, f in cfg.fractions.items())
                 + f". Source: `{cfg.pretrained_path or 'pretrained here on the source classes'}`."))

# %% [markdown]
# ## Pretrain, then adapt over seeds

# %%
results = transfer.run_transfer(stage)
stage.table()

# %% [markdown]
# ## Accuracy against the amount of target data
#
# Each point: mean test accuracy on the five target classes over seeds, with its 95% CI.

# %%
table = stage.frame()
target = table[table["task"] == "target"]
fig = plots.accuracy_vs_data(target, chance=1 / len(cfg.target_classes))
stage.save_figure(fig, "accuracy_vs_target_data")
columns = ["method", "fraction", "train_images", "epochs", "test_acc_mean", "test_acc_ci_low", "test_acc_ci_high",
           "train_val_gap_mean", "corruption_acc_mean"]
table.set_index("label")[[c for c in columns if c in table]].round(4)

# %% [markdown]
# ## The review's claims, measured
#
# Paired by seed: each seed's transfer run against the same seed's scratch run. "Reduces the data
# needed" is tested as: fine-tuning on the small share is no worse (within 1 point) than training from
# scratch on ten times more images; it is only testable where that scratch model is above chance (a
# tie of two chance-level models proves nothing). The method comparisons are context, not claims of
# the review, so they are not entered in the claims table.

# %%
fractions, chance = list(cfg.fractions), 1 / len(cfg.target_classes)
small, large = fractions[0], fractions[-1]
lines = []
if small != large and f"finetune_{small}" in results and f"scratch_{large}" in results:
    scratch_large = results[f"scratch_{large}"].estimate("test_acc")
    if scratch_large.ci_low > chance:
        stage.estimate("transfer_reduces_data_needed",
                       stage.effect(results[f"finetune_{small}"], results[f"scratch_{large}"])[0],
                       metric=f"test_acc, finetune_{small} minus scratch_{large}", unit="paired seeds")
    else:
        lines.append(f"*Reduces the data needed*: not testable at this budget — `scratch_{large}` scores "
                     f"{scratch_large}, not above chance ({chance:.2f}).")
for fraction in fractions:
    for method in ("linear_probe", "frozen_early"):
        if f"{method}_{fraction}" in results and f"finetune_{fraction}" in results:
            effect, _ = stage.effect(results[f"{method}_{fraction}"], results[f"finetune_{fraction}"])
            lines.append(f"Context: `{method}_{fraction}` minus `finetune_{fraction}`: {effect.mean:+.4f} "
                         f"(95% CI {effect.ci_low:+.4f} to {effect.ci_high:+.4f}, {effect.n} paired seeds).")
display(Markdown("\n\n".join([stage.claims_markdown(), *lines])))

# %%
metrics = stage.finish()
