# %% [markdown]
# # 12 · Pruning: what removing channels, or single weights, really buys on a CPU
#
# **What the review claims** (Abstract, I). Pruning is listed among the ways to optimise ResNet50:
# fewer parameters and operations "balancing model performance with resource constraints",
# with little loss of accuracy.
#
# **What we run.** Each seed's trained baseline ResNet50 (the `baseline` stage's weights, a DVC
# dependency) is pruned and then fine-tuned by the same engine for the same epochs as
# `dense_finetuned`, the unpruned baseline fine-tuned alike: the control, so that the extra
# training is not credited to pruning.
#
# * **Structured** pruning (torch-pruning): whole channels leave, chosen per layer group of the
#   dependency graph, so every residual sum keeps matching channels, until the model's MACs have
#   fallen by the target (25%, 50%, 70%). Channel importance: the L2 norm of its weights
#   (`magnitude`) or |weight x gradient| on training batches (`taylor`, first-order loss change).
# * **Unstructured** pruning (`torch.nn.utils.prune`): the same fraction of single weights is
#   zeroed (global L1); the tensors keep their shapes.
#
# Speed-ups are measured side by side in this process (every model timed in turn, 5 rounds,
# median), against `dense_finetuned`.

# %% tags=["parameters"]
stage_name = "pruning"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.experiment import Stage
from resnet_review.techniques import compression

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
display(Markdown(stage.describe()))
display(Markdown("\n".join(f"* `{name}`: {t.method}, {t.amount:.0%}"
                           + (f" of the MACs, {t.importance} importance" if t.method == "structured"
                              else " of the weights zeroed")
                           for name, t in stage.config.targets.items())))

# %% [markdown]
# ## Prune and fine-tune over seeds

# %%
results = compression.run_pruning(stage)
stage.table()

# %% [markdown]
# ## Speed measured side by side

# %%
latency, speedups = stage.compare_latency(reference="dense_finetuned")
latency.round(3)

# %% [markdown]
# ## Accuracy against MACs, measured latency and file size
#
# Each point is one variant: mean test accuracy over seeds with its 95% CI.

# %%
table = stage.frame()
fig = plots.cost_tradeoff(table, costs=("gmacs", "latency_same_run_cpu_b1_ms", "latency_same_run_cpu_b32_ms",
                                        "checkpoint_mb"))
stage.save_figure(fig, "accuracy_vs_cost")
columns = ["test_acc_mean", "test_acc_ci_low", "test_acc_ci_high", "gmacs", "params_m", "weight_sparsity",
           "speedup_cpu_b1", "speedup_cpu_b32", "checkpoint_mb", "corruption_acc_mean"]
table.set_index("label")[[c for c in columns if c in table]].round(4)

# %% [markdown]
# ## The review's claims, measured
#
# "Little loss of accuracy" is tested as a non-inferiority claim: supported when the whole 95% CI
# of the accuracy change lies above -1 point, not supported when it lies below.

# %%
dense = results["dense_finetuned"]
structured = {n: r for n, r in results.items() if r.info.get("method") == "structured"}
unstructured = {n: r for n, r in results.items() if r.info.get("method") == "unstructured"}
for name in [n for n in (*structured, *unstructured) if n in speedups]:
    stage.estimate(f"{name}_speeds_up_cpu", speedups[name]["cpu_b1"].shifted(-1), metric="speedup_cpu_b1 - 1")
lines = [stage.claims_markdown()]
half = next((r for r in structured.values() if r.info["amount"] == 0.5 and r.info["importance"] == "magnitude"), None)
if half is not None:
    s1, s32 = half.info["speedup_cpu_b1"], half.info["speedup_cpu_b32"]
    acc, _ = stage.effect(half, dense)
    lines.append(f"Benchmark goal for the 50%-MACs structured model: ≥ 1.7x faster than dense and within 1 point. "
                 f"Measured: x{s1:.2f} (batch 1) and x{s32:.2f} (batch 32), accuracy {acc.mean:+.4f} "
                 f"(CI {acc.ci_low:+.4f} to {acc.ci_high:+.4f}) → speed goal "
                 f"**{'met' if min(s1, s32) >= 1.7 else 'not met'}** at {stage.budget.img_size} px.")
for name, result in unstructured.items():
    lines.append(f"`{name}`: {result.info['weight_sparsity']:.0%} of the weights are zero, yet dense kernels run it "
                 f"at x{result.info['speedup_cpu_b1']:.2f} (batch 1) / x{result.info['speedup_cpu_b32']:.2f} "
                 "(batch 32) the dense speed: zeros alone do not make a dense kernel faster; its file "
                 f"is {result.profile.checkpoint_mb:.1f} MB, as large as the dense one.")
display(Markdown("\n\n".join(lines)))

# %%
metrics = stage.finish()
