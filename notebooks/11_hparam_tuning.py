# %% [markdown]
# # 11 · Hyper-parameter tuning: does a searched recipe beat the default one?
#
# **What the review claims** (Abstract). Hyper-parameter tuning is listed among the approaches
# by which "the model's performance can be enhanced": a ResNet50 trained with tuned settings
# should be more accurate than one trained with the default recipe.
#
# **What we run.** An [Optuna](https://optuna.org) study over the recipe of the baseline ResNet50:
# optimiser (SGD or AdamW), learning rate and weight decay (drawn as factors of each optimiser's
# usual values), label smoothing and batch size. Every trial trains once, with one seed, on the
# profile's training images and is scored on the **validation** images after every epoch; a
# median pruner stops a trial that falls below the median of earlier trials at the same epoch.
# The default recipe is the study's first trial. The best trial's recipe is then retrained over
# every seed and compared, on the **test** set, with the baseline stage's ResNet50 (the default
# recipe, same budget and seeds, not retrained here). The test set plays no part in the search.
#
# The study is stored in a database (by default SQLite beside the stage's weights; any SQLAlchemy
# URL through `hparam_tuning.storage`, so several machines can share one study); running this
# notebook again resumes it and runs only the trials still missing.

# %% tags=["parameters"]
stage_name = "hparam_tuning"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review.experiment import Stage
from resnet_review.techniques import tuning

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
cfg = stage.config
display(Markdown(stage.describe()))
display(Markdown(f"Study `{cfg.study_name}`: {tuning.n_trials(stage)} trials under this profile, each trained "
                 f"with seed {tuning.trial_seed(stage)}; no trial is pruned before epoch "
                 f"{tuning.first_prunable_epoch(stage)}. Search space: `{tuning.search_space(stage).model_dump()}`."))

# %% [markdown]
# ## The study, then the best recipe over seeds

# %%
outcome = tuning.run_tuning(stage)
study = outcome.study
columns = ["number", "state", "value", "params_optimizer", "user_attrs_lr", "user_attrs_weight_decay",
           "params_label_smoothing", "params_batch_size", "duration"]
trials = study.trials_dataframe()
trials[[c for c in columns if c in trials]].rename(columns={"value": "val_acc"}).set_index("number")

# %% [markdown]
# ## What the study saw
#
# The best validation accuracy so far, each trial's accuracy per epoch (a pruned trial stops
# early), the importance of each parameter (Optuna's default evaluator, from two complete trials
# on; with a handful of trials it is a rough guide) and every trial across the parameters.

# %%
for name, fig in tuning.study_figures(study).items():
    stage.save_figure(fig, name)

# %%
stage.table()

# %% [markdown]
# ## The review's claim, measured
#
# The best trial was selected on validation accuracy, so its own validation score is optimistic;
# the claim is tested on the test set, over the profile's seeds, paired with the baseline's seeds.

# %%
summary = outcome.summary
default_val = summary["default_trial_val_acc"]
display(Markdown("\n".join([
    f"* Best trial: #{summary['best_trial']} of {len(study.trials)} ({summary['complete']} complete, "
    f"{summary['pruned']} pruned), validation accuracy {summary['best_val_acc']:.4f}"
    + (f"; the default recipe's trial {default_val:.4f} (the images the best was selected on: optimistic)."
       if default_val is not None else "."),
    f"* Tuned recipe: `{summary['best_recipe']}`"
    + (" — the default recipe itself: no trial beat it on validation." if summary["best_is_default"] else "."),
    stage.claims_markdown(),
])))

# %%
metrics = stage.finish()
