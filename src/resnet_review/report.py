"""Gather every stage's ``metrics.json`` into the master table, figures and ``index.html``.

The rows come from :func:`resnet_review.results.collect` (re-exported here for the notebooks):
stages are discovered, not listed, so a new technique appears in the report without edits here.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

import pandas as pd

from .claims import Results, footing
from .profiling import TRACED_DIR, compare_latency, load_traced
from .results import (  # noqa: F401  (the notebooks' report.collect)
    COST_LABELS,
    SIDE_BY_SIDE,
    collect,
    on_own_budget,
    pareto_front,
    pool_latency,
)
from .stats import SEEDS_AND_IMAGES
from .techniques.limitations import SOURCE_NOTES

# Columns of the master table: (column in the collected frame, heading, format)
MASTER_COLUMNS = [
    ("train_images", "train images", "{:.0f}"),
    ("test_acc", "test accuracy (95% CI)", "ci"),
    ("test_macro_f1", "macro-F1 (95% CI)", "ci"),
    ("train_val_gap", "train−val gap", "ci"),
    ("corruption_acc", "corrupted accuracy (95% CI)", "ci"),
    ("params_m", "params (M)", "{:.2f}"),
    ("gmacs", "GMACs", "{:.3f}"),
    ("latency_cpu_b1_ms", "CPU ms (b=1)", "{:.1f}"),
    ("latency_cpu_b32_ms", "CPU ms (b=32)", "{:.1f}"),
    ("train_time_s", "train s/seed", "mean"),
    ("peak_train_memory_mb", "train peak MB", "{:.0f}"),
    ("seeds", "seeds", "{:.0f}"),
]




COST_COLUMNS = ("params_m", "gmacs", "latency_cpu_b1_ms", "latency_cpu_b32_ms", "train_time_s_mean",
                "peak_train_memory_mb")


def relative_costs(table: pd.DataFrame, reference: str, label: str = "label") -> pd.DataFrame:
    """Each cost of each row as a multiple of the ``reference`` row's (1.0 = the same cost);
    columns keep the cost's name, the index is the row's label."""
    if reference not in set(table[label]):
        raise KeyError(f"no row labelled {reference!r} (rows: {list(table[label])})")
    ref = table[table[label] == reference].iloc[0]
    columns = [c for c in COST_COLUMNS if c in table]
    out = pd.DataFrame({c: (table[c] / ref[c]).to_numpy() for c in columns})
    out.index = pd.Index(table[label], name=f"cost as a multiple of {reference}'s")
    return out.round(2)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows trained under the profile's own budget (:func:`~resnet_review.results.on_own_budget`)
    — all ten classes, every training image, the profile's epochs and input size, whole images —
    whose accuracies can be set side by side."""
    if frame.empty:
        return frame
    keep = frame.apply(lambda row: on_own_budget(row, row.get("budget_train_size"), row.get("budget_img_size"),
                                                 row.get("budget_epochs")), axis=1)
    return frame[keep.astype(bool)]


def time_side_by_side(frame: pd.DataFrame, models_dir: str | os.PathLike, *, repeats: int = 10,
                      rounds: int = 5) -> pd.DataFrame:
    """``frame`` with :data:`~resnet_review.results.SIDE_BY_SIDE`: the batch-1 CPU latency of
    each row's architecture, every one timed in this process, in turn, round after round (median
    over ``rounds``), from the TorchScript trace its stage saved under
    ``<models_dir>/<stage>/traced/``; NaN where no trace was saved (a model the tracer cannot
    follow, or a run whose weights are not at hand). Timings from different processes differ by
    tens of percent on a shared machine; these do not."""
    frame = frame.copy()
    frame[SIDE_BY_SIDE] = math.nan
    if frame.empty or "architecture" not in frame:
        return frame
    traces = {}
    for _, row in frame.dropna(subset=["architecture"]).iterrows():
        path = Path(models_dir) / row["stage"] / TRACED_DIR / f"{row['architecture']}.pt"
        if row["architecture"] not in traces and path.is_file():
            traces[row["architecture"]] = load_traced(path)
    if traces:
        times = compare_latency({a: m for a, (m, _) in traces.items()}, {a: s for a, (_, s) in traces.items()},
                                batch_sizes=(1,), repeats=repeats, rounds=rounds)
        median = {a: float(pd.Series(t["cpu_b1"]).median()) for a, t in times.items()}
        frame[SIDE_BY_SIDE] = frame["architecture"].map(median)
    return frame


def training_compute(results: Results, label: str) -> str:
    """What ``stage/variant`` was trained on and for (:func:`resnet_review.claims.footing`):
    images x epochs, extra fine-tuning epochs, a teacher's."""
    f = footing(results, label)
    out = f"{f['train_images']:.0f} images x {f['epochs']:.0f} epochs" if f["train_images"] and f["epochs"] else "?"
    if f["extra_epochs"]:
        out += f" + {f['extra_epochs']:.0f} fine-tuning"
    return out + (f", teacher {f['teacher']}" if f.get("teacher") else "")


def pareto_table(frame: pd.DataFrame, x: str = "latency_cpu_b1_ms", y: str = "test_acc",
                 results: Results | None = None) -> pd.DataFrame:
    """The models on the Pareto front of ``frame`` (lower ``x``, higher mean ``y``), cheapest
    first, formatted, each with what it was trained on and for (``results``: the stages' metrics):
    the headline table of the report and of reports/RESULTS.md."""
    front = frame[pareto_front(frame, x, f"{y}_mean")].sort_values(x)
    table = pd.DataFrame({"model": front["label"], COST_LABELS.get(x, x): front[x].map("{:.1f}".format),
                          "test accuracy (95% CI)": [_fmt(row, y, "ci") for _, row in front.iterrows()],
                          "params (M)": front["params_m"].map("{:.1f}".format) if "params_m" in front else ""})
    if results is not None:
        table["training"] = [training_compute(results, label) for label in front["label"]]
    return table


def claims_table(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims, formatted for reading: effect with its 95% CI in one column (over seeds and test
    images where both sides' predictions are recorded, with the seeds-only CI beside it), and,
    where measured (:func:`resnet_review.claims.measure`), the Benjamini–Hochberg q-value and
    verdict, the evidence tier, the other runs' evidence and the literature."""
    def interval(row) -> str:
        if pd.isna(row["effect"]):
            return ""
        if pd.isna(row["ci_low"]):
            return f"{row['effect']:+.4f}"
        return f"{row['effect']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"

    notes = "note" in claims and claims["note"].fillna("").astype(bool).any()
    if claims.empty:
        return pd.DataFrame(columns=["section", "claim", "metric", "comparison", "effect [95% CI]", "verdict",
                                     "profile"])
    out = claims[["section", "claim", "metric", "comparison"]].copy()
    out["effect [95% CI]"] = claims.apply(interval, axis=1)
    if "interval" in claims and (claims["interval"] == SEEDS_AND_IMAGES).any():
        out["CI counts"] = claims["interval"]
        out["seeds-only CI"] = [
            "" if pd.isna(lo) or kind != SEEDS_AND_IMAGES else f"[{lo:+.4f}, {hi:+.4f}]"
            for lo, hi, kind in zip(claims["ci_seeds_low"], claims["ci_seeds_high"], claims["interval"])]
    out["verdict"] = claims["verdict"]
    if "verdict_bh" in claims:
        out["q (BH)"] = claims["q_value"].map(lambda q: "" if pd.isna(q) else f"{q:.3f}")
        out["verdict after BH"] = claims["verdict_bh"]
        out["evidence"] = claims["tier"]
    out["profile"] = claims["profile"]
    if "other_evidence" in claims and claims["other_evidence"].fillna("").astype(bool).any():
        out["other runs"] = claims["other_evidence"].fillna("")
    if "literature" in claims and claims["literature"].fillna("").astype(bool).any():
        out["literature"] = claims["literature"].fillna("")
    if notes:  # why a claim is not measured (a stage not run, a gpu-only variant)
        out["note"] = claims["note"].fillna("")
    return out


def result_sources(reports_root: str | Path, primary: str | Path) -> list[Path]:
    """Every folder of stage results under ``reports_root`` that the claims can be measured on:
    ``primary`` first, then each other ``stages`` folder holding a stage's metrics (a gpu
    campaign's, an archived gpu run's); scratch output is never evidence, and a scratch run is
    measured on its own results alone."""
    primary, root = Path(primary).resolve(), Path(reports_root).resolve()
    if "scratch" in primary.parts:  # a notebook run by hand or by the tests: its own results alone
        return [primary]
    others = sorted(d.resolve() for d in root.glob("**/stages") if any(d.glob("*/metrics.json")))
    return [primary, *(d for d in others if d != primary and "scratch" not in d.relative_to(root).parts)]


def _fmt(row: pd.Series, column: str, how: str) -> str:
    if how == "ci":
        mean, lo, hi = (row.get(f"{column}_{k}", math.nan) for k in ("mean", "ci_low", "ci_high"))
        if pd.isna(mean):
            return ""
        return f"{mean:.4f}" if pd.isna(lo) else f"{mean:.4f} ± {(hi - lo) / 2:.4f}"
    value = row.get(f"{column}_mean", math.nan) if how == "mean" else row.get(column, math.nan)
    return "" if pd.isna(value) else (f"{value:.0f}" if how == "mean" else how.format(value))


def master_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The report's headline table: every stage variant with accuracy ± CI and its costs."""
    if frame.empty:
        return pd.DataFrame(columns=["stage", "variant", "profile", "task"] + [h for _, h, _ in MASTER_COLUMNS])
    rows = [{"stage": row["stage"], "variant": row["variant"], "profile": row["profile"], "task": _task(row),
             **{heading: _fmt(row, col, how) for col, heading, how in MASTER_COLUMNS}}
            for _, row in frame.iterrows()]
    return pd.DataFrame(rows)


def _task(row: pd.Series) -> str:
    """What a row's accuracy is out of: the ten classes, unless a stage records another task (the
    transfer stage's 5-class source and target tasks), whose accuracies are not comparable."""
    task = row.get("task")
    if not isinstance(task, str) or not task:
        return "10 classes"
    classes = row.get(f"{task}_classes")
    return f"{task}, classes {', '.join(map(str, classes))}" if isinstance(classes, list | tuple) else task


def collect_table1(stages_dir: str | Path) -> pd.DataFrame:
    """The review's Table 1 with its measured column, as a stage logged it (``table1`` in its
    metrics.json, see :func:`resnet_review.techniques.limitations.table1`), with a note beside a row whose
    citation does not support it (:data:`~resnet_review.techniques.limitations.SOURCE_NOTES`); empty when no
    stage did."""
    for path in sorted(Path(stages_dir).glob("*/metrics.json")):
        rows = json.loads(path.read_text()).get("table1")
        if isinstance(rows, dict) and rows:
            table = pd.DataFrame.from_dict(rows, orient="index")
            table.index.name = "row"
            notes = [SOURCE_NOTES.get(row, "") for row in table.index]
            return table.assign(**({"note on the source": notes} if any(notes) else {}), stage=path.parent.name)
    return pd.DataFrame()


def write_tables(frame: pd.DataFrame, out_dir: str | Path, claims: pd.DataFrame | None = None,
                 table1: pd.DataFrame | None = None) -> dict[str, Path]:
    """The master table as CSV (raw numbers) and Markdown (formatted), plus the raw collection;
    the claims table (``claims.yaml`` measured, see :mod:`resnet_review.claims`) and the review's
    Table 1 measured (``table1``, see :func:`collect_table1`), each as CSV and Markdown, when given."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"raw_csv": out_dir / "all_metrics.csv", "csv": out_dir / "master_table.csv",
             "md": out_dir / "master_table.md"}
    frame.to_csv(paths["raw_csv"], index=False)
    table = master_table(frame)
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(table.to_markdown(index=False) + "\n", encoding="utf-8")
    if claims is not None:
        paths |= {"claims_csv": out_dir / "claims.csv", "claims_md": out_dir / "claims.md"}
        claims.to_csv(paths["claims_csv"], index=False)
        paths["claims_md"].write_text(claims_table(claims).to_markdown(index=False) + "\n", encoding="utf-8")
    if table1 is not None and not table1.empty:
        paths |= {"table1_csv": out_dir / "table1.csv", "table1_md": out_dir / "table1.md"}
        table1.to_csv(paths["table1_csv"])
        paths["table1_md"].write_text(table1.drop(columns="stage").to_markdown(index=False) + "\n", encoding="utf-8")
    return paths


def write_index(reports_dir: str | Path, stages_dir: str | Path, report_dir: str | Path,
                figures: list[Path], table: pd.DataFrame, claims: pd.DataFrame | None = None,
                forest: Path | None = None) -> Path:
    """``reports/index.html``, claims first: the review's claims measured (``claims``, one row per
    claim with its strongest evidence) and the forest plot of every effect, then the figures (the
    Pareto front first), the links to every rendered notebook, and the master table last."""
    reports_dir, stages_dir, report_dir = Path(reports_dir), Path(stages_dir), Path(report_dir)

    def rel(p: Path) -> str:
        return html.escape(Path(os.path.relpath(Path(p).resolve(), reports_dir.resolve())).as_posix())

    def img(f: Path) -> str:
        name = html.escape(f.stem)
        return f'<figure><img src="{rel(f)}" alt="{name}"><figcaption>{name}</figcaption></figure>'

    notebooks = sorted(p for p in stages_dir.glob("*/notebook.html"))
    items = "\n".join(f'<li><a href="{rel(p)}">{html.escape(p.parent.name)}</a></li>' for p in notebooks)
    items += f'\n<li><a href="{rel(report_dir / "notebook.html")}">report</a> (this summary, rendered)</li>'
    profiles = ", ".join(sorted(table["profile"].unique())) if "profile" in table else "?"
    progress = reports_dir / "campaign.md"  # a chunked (gpu campaign) run: what is still missing
    progress = (f'<h2>Campaign progress</h2><p>Stages and variants still missing (<a href="campaign.md">'
                f'campaign.md</a>):</p><pre>{html.escape(progress.read_text())}</pre>' if progress.is_file() else "")
    claims_html = ""
    if claims is not None:
        counts = ", ".join(f"{v}: {n}" for v, n in claims["verdict_bh"].value_counts().items()) \
            if "verdict_bh" in claims else ""
        kinds = set(claims["interval"]) if "interval" in claims else set()
        intervals = ("Every interval counts the seeds only, not the sampling of the test images (these results "
                     "hold no per-image predictions)." if SEEDS_AND_IMAGES not in kinds else
                     "An interval counts the seeds and the sampling of the test images where both sides recorded "
                     "their per-image predictions (column 'CI counts'), the seeds only elsewhere.")
        claims_html = f"""<h2 id="claims">The review's claims, measured</h2>
<p>Each claim of the review, the comparison that tests it, the paired effect (same seeds) with its 95% CI over
seeds, the raw verdict and the verdict after Benjamini–Hochberg control of the false discovery rate at 5% over the
claims of one run, and the tier of the evidence it rests on (the strongest run that measured it; the others
beside). {html.escape(intervals)} {html.escape(counts)}.</p>
{claims_table(claims).to_html(index=False, escape=True, border=0, table_id="claims-table")}
{img(forest) if forest else ""}"""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>resnet-review results</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:85%}}td,th{{border:1px solid #ccc;padding:3px 6px}}
img{{max-width:100%}}</style></head><body>
<h1>resnet-review: measured ResNet50 optimisation techniques</h1>
<p>Fashion-MNIST, profile <b>{html.escape(profiles)}</b>. Accuracy is the mean over seeds with a 95% Student-t
confidence interval; small-budget profiles (smoke, cpu) are exploratory, not paper-grade numbers.</p>
{progress}
{claims_html}
<h2>Figures</h2>
{"".join(img(f) for f in figures)}
<h2>Rendered notebooks</h2><ul>
{items}
</ul>
<h2>Master table</h2>
{table.to_html(index=False, escape=True, border=0)}
</body></html>
"""
    path = reports_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def benchmark_markdown(path: str | Path) -> str:
    data = json.loads(Path(path).read_text())
    status = "meets" if data["meets_goals"] else "misses"
    return (f"Measured on {data['device']} ({data['threads']} threads, torch {data['torch']}), {data['model']}, "
            f"batch {data['batch_size']}, {data['steps']} steps × {len(data['rounds'])} rounds: the engine takes "
            f"**{data['ratio_median']:.3f}×** the bare loop's time (goal ≤ 1.05) and gathering batches is "
            f"**{data['data_share_median']:.2%}** of a step (goal < 5%); {data['images_per_s_engine']:.0f} vs "
            f"{data['images_per_s_bare']:.0f} images/s. It {status} both goals. "
            f"(`reports/benchmarks/engine_overhead.json`)")


def results_page(reports_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``RESULTS.md``: the headline (verdicts per evidence tier, before and after FDR control),
    the Pareto front, the claims, Table 1, the master table and the benchmark times, every number
    copied from the report's own tables and ``benchmarks/*.json``, so none is ever typed by hand."""
    reports_dir = Path(reports_dir)
    report_dir, out = reports_dir / "report", Path(out) if out else reports_dir / "RESULTS.md"

    def section(title: str, intro: str, name: str) -> str:
        path = report_dir / name
        return f"\n## {title}\n\n{intro}\n\n{path.read_text(encoding='utf-8').strip()}\n" if path.is_file() else ""

    body = "# resnet-review: results\n\nGenerated by the report stage (`resnet_review.report.results_page`); " \
           "do not edit by hand.\n"
    claims_csv = report_dir / "claims.csv"
    if claims_csv.is_file():
        import pandas as pd

        claims = pd.read_csv(claims_csv)
        body += f"\n## Headline\n\nThe review makes {len(claims)} measured claims.\n\n"
        for tier, group in claims.groupby("tier", sort=True):
            raw = ", ".join(f"{v}: {n}" for v, n in group["verdict"].value_counts().items())
            bh = ", ".join(f"{v}: {n}" for v, n in group["verdict_bh"].value_counts().items())
            body += f"- **{tier}** ({len(group)} claims): raw verdicts {raw}; after Benjamini–Hochberg FDR " \
                    f"control at 5%, {bh}.\n"
    timing = report_dir / "pareto_timing.txt"
    timing = f" Latency: {timing.read_text(encoding='utf-8').strip()}." if timing.is_file() else ""
    body += section("Pareto front", "Models no other model beats on both accuracy and CPU latency (each trained "
                    f"on its profile's images and epochs, with the training listed).{timing}", "pareto_front.md")
    body += section("The review's claims, measured", "Paired by seed; effect = treatment − control, 95% CI "
                    "(also `reports/report/claims.md`, `claims.csv`):", "claims.md")
    body += section("The review's Table 1, measured", "ResNet50's limitations, measured on the baseline:",
                    "table1.md")
    body += section("Every stage and variant", "Mean over seeds with a 95% Student-t interval:", "master_table.md")
    bench = reports_dir / "benchmarks"
    engine, repro = bench / "engine_overhead.json", bench / "repro_time.json"
    if engine.is_file() or repro.is_file():
        body += "\n## Benchmarks\n\n"
    if engine.is_file():
        body += "- Engine overhead: " + benchmark_markdown(engine) + "\n"
    if repro.is_file():
        data = json.loads(repro.read_text())
        body += (f"- Pipeline time ({data.get('note', 'one repro')}): the stages took {data['stages_wall_s'] / 60:.1f} "
                 f"min ({data['training_s'] / 60:.1f} min training, {data['other_s'] / 60:.1f} min else), "
                 f"{data['span_s'] / 60:.1f} min first to last; the baseline trained at "
                 f"{data['baseline_train_images_per_s']:.1f} images/s (goal: {data['goal_min']:.0f} min)"
                 + (f"; it keeps {data['models_gib']:.1f} GiB of weights under `models/`"
                    if data.get("models_gib") is not None else "")
                 + ". (`reports/benchmarks/repro_time.json`)\n\n")
        body += "| stage | wall (s) | training (s) | other (s) |\n|---|---|---|---|\n"
        body += "".join(f"| {st['stage']} | {st['wall_s']:.1f} | {st['training_s']:.1f} | {st['other_s']:.1f} |\n"
                        for st in data.get("stages", []))
    out.write_text(body, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m resnet_review.report results-page``: write reports/RESULTS.md from the report's tables."""
    import argparse

    from .config import Paths

    parser = argparse.ArgumentParser(prog="python -m resnet_review.report", description=main.__doc__)
    parser.add_argument("command", choices=["results-page"])
    parser.parse_args(argv)
    print(results_page(Paths().reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
