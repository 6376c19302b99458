# %% [markdown]
# # 13 · int8 quantisation: accuracy, CPU latency and size, measured
#
# **What the review claims** (Abstract, I). Quantisation is listed among the ways to optimise
# ResNet50 for real-world use: lower-precision weights and activations cut inference cost and
# memory while keeping accuracy.
#
# **What we run.** Each seed's trained baseline ResNet50 (the `baseline` stage's weights):
#
# * `fp32`: evaluated as trained, the reference;
# * `int8_ptq`: post-training static int8 (PyTorch FX graph mode, x86 qconfig on the FBGEMM
#   engine), activation ranges observed on training batches only;
# * `int8_qat`: quantisation-aware fine-tuning (fake-quantised training by the same engine), then
#   int8: the follow-up when post-training quantisation loses accuracy;
# * `pruned_fp32` / `pruned_int8`: the `pruning` stage's 50%-MACs structured model, as it is and
#   quantised: pruning and quantisation combined.
#
# Why FX mode and not torchao's PT2E flow: on this project's CPU, PT2E with the x86 inductor
# quantizer measured 0.8-1.4x of fp32 after 2-38 s of compilation, FX mode 2.5-4.5x (README).
# Latencies are measured side by side in this process against `fp32`.

# %% tags=["parameters"]
stage_name = "quantisation"
profile = "smoke"
reports_dir = "reports/scratch/stages"
models_dir = "models/scratch"

# %%
from IPython.display import Markdown, display

from resnet_review import plots
from resnet_review.evaluate import predict
from resnet_review.experiment import Stage
from resnet_review.techniques import compression

stage = Stage(stage_name, profile=profile, reports_dir=reports_dir, models_dir=models_dir)
display(Markdown(stage.describe()))

# %% [markdown]
# ## Quantise (and fine-tune) over seeds

# %%
results = compression.run_quantisation(stage)
stage.table()

# %% [markdown]
# ## Speed measured side by side, and agreement with fp32
#
# Agreement: the share of test images on which the int8 model predicts the class its fp32
# source predicts (first seed).

# %%
latency, speedups = stage.compare_latency(reference="fp32")
test = stage.splits.test.to("cpu")
for name, reference in (("int8_ptq", "fp32"), ("int8_qat", "fp32"), ("pruned_int8", "pruned_fp32")):
    if name in results and reference in results:
        agree = (predict(results[name].model, test).argmax(1) == predict(results[reference].model, test).argmax(1))
        stage.annotate(name, agreement_with_fp32=float(agree.float().mean()))
        if name == "pruned_int8":
            stage.annotate(name, **{f"speedup_vs_pruned_fp32_{k}": latency.loc[reference, f"latency_same_run_{k}_ms"]
                                    / latency.loc[name, f"latency_same_run_{k}_ms"] for k in ("cpu_b1", "cpu_b32")})
latency.round(3)

# %% [markdown]
# ## Accuracy against latency and size

# %%
table = stage.frame()
fig = plots.cost_tradeoff(table, costs=("latency_same_run_cpu_b1_ms", "latency_same_run_cpu_b32_ms",
                                        "checkpoint_mb"))
stage.save_figure(fig, "accuracy_vs_cost")
columns = ["test_acc_mean", "test_acc_ci_low", "test_acc_ci_high", "agreement_with_fp32", "speedup_cpu_b1",
           "speedup_cpu_b32", "checkpoint_mb", "gmacs", "corruption_acc_mean"]
table.set_index("label")[[c for c in columns if c in table]].round(4)

# %% [markdown]
# ## The review's claims, measured
#
# "Keeps accuracy" is a non-inferiority claim: supported when the whole 95% CI of the accuracy
# change lies above -0.5 point.

# %%
fp32 = results["fp32"]
stage.estimate("int8_speeds_up_cpu", speedups["int8_ptq"]["cpu_b32"].shifted(-1), metric="speedup_cpu_b32 - 1")
lines = [stage.claims_markdown()]
ptq = results["int8_ptq"].info
acc, _ = stage.effect(results["int8_ptq"], fp32)
lines.append(f"Benchmark goal: int8 ≥ 3x faster than fp32 with an accuracy drop under 0.5 point. Measured: "
             f"x{ptq['speedup_cpu_b1']:.2f} (batch 1), x{ptq['speedup_cpu_b32']:.2f} (batch 32), accuracy "
             f"{acc.mean:+.4f} (CI {acc.ci_low:+.4f} to {acc.ci_high:+.4f}) → speed goal "
             f"**{'met' if ptq['speedup_cpu_b32'] >= 3 else 'not met'}** at batch 32, {stage.budget.img_size} px; "
             f"weights {results['int8_ptq'].profile.checkpoint_mb:.1f} MB vs {fp32.profile.checkpoint_mb:.1f} MB.")
if "pruned_int8" in results:
    info = results["pruned_int8"].info
    lines.append(f"Pruning + int8 together: x{info['speedup_cpu_b1']:.2f} (batch 1) / x{info['speedup_cpu_b32']:.2f} "
                 f"(batch 32) faster than the unpruned fp32 model, at "
                 f"{results['pruned_int8'].profile.checkpoint_mb:.1f} MB.")
display(Markdown("\n\n".join(lines)))

# %%
metrics = stage.finish()
