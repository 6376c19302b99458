"""The review's claims as data: ``claims.yaml`` lists each one once, and :func:`evaluate` is the
one function that measures it — in the notebook of the stage that tests it
(:meth:`~resnet_review.experiment.Stage.claims_markdown`) and in the report alike.

Every entry names the review's section, its words condensed, and the comparison that tests it:

* ``treatment`` / ``control`` (``stage/variant``) and a ``metric`` of the per-seed results every
  stage writes to ``metrics.json``: the report computes the paired (same seeds) difference
  ``treatment - control``, its 95% Student-t CI and the verdict itself — ``expect: increase`` or
  ``decrease``, or ``no_loss`` within ``margin`` (e.g. "pruning keeps accuracy within 1 point");
* or ``stage_claim: stage/key`` for an effect that is not a difference of per-seed values (a
  speed-up measured over timing rounds, an interaction of two effects): the estimate the stage
  recorded under ``key`` (``claims`` in its metrics.json, see
  :meth:`~resnet_review.experiment.Stage.estimate`), judged here against ``expect``/``margin``.

A claim belongs to the stage of its treatment (or of its ``stage_claim``): that stage's notebook
shows it, measured on the results written so far.

A claim whose stage or variant has not run under the profile at hand (e.g. a gpu-only variant in
a cpu run) is listed as *not measured*, with the reason, never dropped: the table shows what the
review asserts and what of it the data can answer.

Each measured claim also carries its p-value, the Benjamini–Hochberg q-value within its family
(the review's claims measured under one profile) and the verdict that survives that correction,
and the tier of its evidence (:func:`evidence_tier`). Results of several runs (the cpu profile,
a gpu campaign, an earlier short gpu run) are measured each on its own (:func:`measure_sources`)
and :func:`strongest` keeps, per claim, the strongest tier with the others beside it. A claim may
cite ``literature``: the published effect it bears on (e.g. ImageNet top-1) and its source.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import PREDICTIONS_FILE
from .stats import (
    SEEDS_AND_IMAGES,
    SEEDS_ONLY,
    Estimate,
    bh_adjust,
    p_value,
    paired_difference,
    paired_seeds_and_images,
    verdict,
    verdict_after_fdr,
)

NOT_MEASURED = "not measured"
UNEQUAL = "not comparable: unequal footing"
# what both sides of a paired comparison must share unless the claim declares the difference as
# the thing it tests (``differs``): the training images, input size, epochs, extra fine-tuning
# epochs (pruning, QAT) and the teacher a model learnt from
FOOTING = ("train_images", "img_size", "epochs", "extra_epochs", "teacher")
NOT_TESTABLE = "not testable here"
# an overfitting claim needs the model expected to overfit to fit its training images: its mean
# training accuracy (eval mode, on a probe of training images) at least this
FIT_THRESHOLD = 0.9
COLUMNS = ["id", "section", "claim", "metric", "comparison", "effect", "ci_low", "ci_high", "interval",
           "ci_seeds_low", "ci_seeds_high", "seeds", "verdict", "profile", "note", "p_value", "q_value", "verdict_bh",
           "tier", "literature"]
FDR_ALPHA = 0.05
# evidence tiers, weakest first: what a verdict rests on
TIERS = ("smoke: a check of the code, not evidence", "exploratory (cpu)", "gpu, another budget",
         "full-data short schedule (gpu)", "paper-grade (gpu profile as written)")
_BUDGET_KEYS = ("train_size", "img_size", "epochs", "seeds")


def evidence_tier(profile: str | None, budget: dict | None, written: dict[str, dict] | None = None) -> str:
    """What a result rests on: the smoke and cpu profiles are exploratory whatever they show; a
    gpu result is paper-grade only under the gpu profile as ``params.yaml`` writes it (``written``:
    each profile's budget), a full-data short schedule with the full training set and fewer epochs,
    another budget otherwise."""
    if profile == "smoke":
        return TIERS[0]
    if profile != "gpu":
        return TIERS[1]
    gpu, budget = (written or {}).get("gpu"), budget or {}
    if gpu is not None and all(budget.get(k) == gpu.get(k) for k in _BUDGET_KEYS):
        return TIERS[4]
    if gpu is not None and budget.get("train_size") == gpu.get("train_size") and \
            budget.get("epochs", math.inf) < gpu.get("epochs", 0):
        return TIERS[3]
    return TIERS[2]


class Literature(BaseModel):
    """A published effect a claim bears on, with its source (not a measurement of this project)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effect: str = Field(min_length=1, description="e.g. '+1.49 top-1 on ImageNet (77.62 vs 76.13)'")
    source: str = Field(min_length=1)


class ClaimSpec(BaseModel):
    """One claim of the review and the measurement that tests it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    section: str
    claim: str = Field(min_length=1, description="the review's words, condensed")
    metric: str | None = Field(None, description="a per-seed metric of metrics.json, e.g. test_acc")
    treatment: str | None = Field(None, description="stage/variant")
    control: str | None = Field(None, description="stage/variant")
    expect: Literal["increase", "decrease", "no_loss"] = "increase"
    margin: float = Field(0.0, ge=0, description="with no_loss: the largest loss still called 'no loss'")
    stage_claim: str | None = Field(None, description="stage/key of an effect a stage estimated itself")
    literature: Literature | None = None
    differs: list[Literal["train_images", "img_size", "epochs", "extra_epochs", "teacher"]] = Field(
        default_factory=list, description="footing the two sides may differ in: the thing the claim tests")

    @field_validator("treatment", "control", "stage_claim")
    @classmethod
    def _stage_slash_name(cls, value: str | None) -> str | None:
        if value is not None and (value.count("/") != 1 or not all(value.split("/"))):
            raise ValueError(f"must be 'stage/name', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_kind_of_test(self) -> "ClaimSpec":
        paired = (self.metric, self.treatment, self.control)
        if self.stage_claim is None and None in paired:
            raise ValueError("give metric, treatment and control, or stage_claim")
        if self.stage_claim is not None and any(v is not None for v in paired):
            raise ValueError("stage_claim takes the stage's own estimate: give no metric, treatment or control")
        if self.expect == "no_loss" and self.margin == 0:
            raise ValueError("expect: no_loss needs the margin of loss that still counts as none")
        return self

    @property
    def expected_sign(self) -> int:
        return -1 if self.expect == "decrease" else +1

    @property
    def stage(self) -> str:
        """The stage whose notebook tests the claim: its treatment's, or its estimate's."""
        return (self.stage_claim or self.treatment).split("/")[0]

    @property
    def margin_of_no_loss(self) -> float:
        return self.margin if self.expect == "no_loss" else 0.0

    @property
    def comparison(self) -> str:
        if self.stage_claim:
            return f"{self.stage_claim} (the stage's estimate)"
        return f"{self.treatment} vs {self.control}"


def load_catalogue(path: str | os.PathLike) -> list[ClaimSpec]:
    """Read and validate ``claims.yaml``: one line per bad entry, ids unique."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    entries = raw.get("claims") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a list under 'claims:'")
    specs, problems = [], []
    for i, entry in enumerate(entries):
        try:
            specs.append(ClaimSpec.model_validate(entry))
        except ValidationError as err:
            name = entry.get("id", f"#{i}") if isinstance(entry, dict) else f"#{i}"
            problems += [f"  {name}.{'.'.join(map(str, e['loc'])) or '(entry)'}: {e['msg']}" for e in err.errors()]
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            problems.append(f"  {spec.id}: duplicate id")
        seen.add(spec.id)
    if problems:
        raise ValueError(f"{path} is invalid:\n" + "\n".join(problems))
    return specs


class Results:
    """The metrics.json of every stage under ``stages_dir``, read once."""

    def __init__(self, stages_dir: str | os.PathLike):
        self.dir = Path(stages_dir)
        self._data: dict[str, dict | None] = {}
        self._predictions: dict[str, dict] = {}

    def stage(self, name: str) -> dict | None:
        if name not in self._data:
            path = self.dir / name / "metrics.json"
            self._data[name] = json.loads(path.read_text()) if path.is_file() else None
        return self._data[name]

    def correctness(self, ref: str, seeds: list[int]) -> tuple[np.ndarray, str] | None:
        """``(seeds x images)`` 0/1 correctness of ``stage/variant`` on its test images, with the
        images' classes (to check two variants were scored on the same images), from the stage's
        ``predictions.json``; None where the stage did not record them."""
        stage, variant = ref.split("/")
        if stage not in self._predictions:
            path = self.dir / stage / PREDICTIONS_FILE
            self._predictions[stage] = json.loads(path.read_text())["variants"] if path.is_file() else {}
        entry = self._predictions[stage].get(variant)
        if not entry or not all(str(s) in entry["seeds"] for s in seeds):
            return None
        targets = entry["targets"]
        return np.array([[p == t for p, t in zip(entry["seeds"][str(s)], targets)] for s in seeds]), targets

    def per_seed(self, ref: str, metric: str) -> tuple[dict[int, float] | None, str | None, str]:
        """``({seed: value}, profile, "")`` of ``stage/variant``, or ``(None, profile, why not)``."""
        stage, variant = ref.split("/")
        data = self.stage(stage)
        if data is None:
            return None, None, f"stage '{stage}' has not run"
        block = data.get(variant)
        if not isinstance(block, dict) or "per_seed" not in block:
            return None, data.get("profile"), f"'{ref}' did not run under profile '{data.get('profile')}'"
        seeds, values = block["per_seed"].get("seed", []), block["per_seed"].get(metric)
        if values is None:
            return None, data.get("profile"), f"'{ref}' has no per-seed '{metric}'"
        return ({s: (math.nan if v is None else v) for s, v in zip(seeds, values)}, data.get("profile"), "")


def footing(results: Results, ref: str, _depth: int = 0) -> dict:
    """What ``stage/variant`` was trained on and for (:data:`FOOTING`): what the variant records,
    else its stage's budget; a variant made from another (``source``: pruned, quantised) inherits
    its source's and adds its own fine-tuning."""
    stage, variant = ref.split("/")
    data = results.stage(stage) or {}
    block = data.get(variant) or {}
    source = block.get("source")
    if isinstance(source, str) and _depth < 5:
        source = source if "/" in source else f"{stage}/{source}"
        base = footing(results, source, _depth + 1)
    else:  # trained under the stage's budget, unless the variant says otherwise
        budget = data.get("budget") or {}
        base = {"train_images": budget.get("train_size"), "img_size": budget.get("img_size"),
                "epochs": budget.get("epochs"), "extra_epochs": 0}
    own = {k: block.get(k) for k in ("train_images", "img_size", "epochs", "teacher")}
    return {**{k: own[k] if own[k] is not None else base.get(k) for k in own},
            "extra_epochs": base["extra_epochs"] + (block.get("finetune_epochs") or 0) + (block.get("qat_epochs") or 0)}


def _row(spec: ClaimSpec, effect: Estimate | None, outcome: str, profile: str | None, note: str = "",
         null: float = 0.0, budget: dict | None = None, written: dict | None = None,
         seeds_only: Estimate | None = None, p: float | None = None, interval: str | None = None) -> dict:
    """A row of the table. ``effect`` is the claim's estimate; where it counts the test images too,
    ``seeds_only`` is the seeds-only interval beside it and ``p`` its p-value; ``interval`` names
    what a stage's own estimate is over (e.g. timing rounds)."""
    e, so = (effect.as_dict() if effect else {}), (seeds_only or effect)
    return {"id": spec.id, "section": spec.section, "claim": spec.claim,
            "metric": spec.metric or "(stage estimate)", "comparison": spec.comparison,
            "effect": e.get("mean", math.nan), "ci_low": e.get("ci_low", math.nan),
            "ci_high": e.get("ci_high", math.nan),
            "interval": (interval or (SEEDS_AND_IMAGES if seeds_only else SEEDS_ONLY)) if effect else "",
            "ci_seeds_low": so.ci_low if so else math.nan, "ci_seeds_high": so.ci_high if so else math.nan,
            "seeds": e.get("n", math.nan), "verdict": outcome, "profile": profile or "", "note": note,
            "p_value": (p if p is not None else p_value(effect, null)) if effect else math.nan,
            "tier": evidence_tier(profile, budget, written) if effect else "",
            "literature": f"{spec.literature.effect} ({spec.literature.source})" if spec.literature else ""}


def evaluate(spec: ClaimSpec, results: Results, written: dict | None = None) -> dict:
    """One claim measured: its effect, 95% CI, p-value, verdict and evidence tier, or 'not
    measured' and why. ``written``: each profile's budget as params.yaml writes it."""
    if spec.stage_claim:
        stage, key = spec.stage_claim.split("/")
        data = results.stage(stage)
        if data is None:
            return _row(spec, None, NOT_MEASURED, None, f"stage '{stage}' has not run")
        claim = (data.get("claims") or {}).get(key)
        if claim is None:
            return _row(spec, None, NOT_MEASURED, data.get("profile"), f"stage '{stage}' made no claim '{key}'")
        effect = Estimate(**{k: (math.nan if v is None else v) for k, v in claim["effect"].items()})
        margin, profile = spec.margin_of_no_loss, claim.get("profile", data.get("profile"))
        row = _row(spec, effect, verdict(effect, spec.expected_sign, margin), profile,
                   null=-margin * spec.expected_sign, budget=data.get("budget"), written=written,
                   interval=claim.get("unit"))
        return {**row, "metric": claim.get("metric") or row["metric"]}
    treated, profile_t, why_t = results.per_seed(spec.treatment, spec.metric)
    control, profile_c, why_c = results.per_seed(spec.control, spec.metric)
    if treated is None or control is None:
        return _row(spec, None, NOT_MEASURED, profile_t or profile_c, why_t or why_c)
    if profile_t != profile_c:
        return _row(spec, None, NOT_MEASURED, f"{profile_t}/{profile_c}",
                    f"{spec.treatment} ran under '{profile_t}', {spec.control} under '{profile_c}'")
    if set(treated) != set(control):
        return _row(spec, None, NOT_MEASURED, profile_t, f"seeds differ: {sorted(treated)} vs {sorted(control)}")
    seeds = sorted(treated)
    effect = seeds_only = paired_difference([treated[s] for s in seeds], [control[s] for s in seeds])
    margin = spec.margin_of_no_loss
    null, p = -margin * spec.expected_sign, None
    scored = [results.correctness(ref, seeds) for ref in (spec.treatment, spec.control)] \
        if spec.metric == "test_acc" else [None]
    if all(scored) and scored[0][1] == scored[1][1]:  # both on the same test images: count them too
        effect, p = paired_seeds_and_images(scored[0][0], scored[1][0], null)
    else:
        seeds_only = None
    budget = (results.stage(spec.treatment.split("/")[0]) or {}).get("budget")
    sides = footing(results, spec.treatment), footing(results, spec.control)
    unequal = [k for k in FOOTING if sides[0][k] != sides[1][k] and k not in spec.differs]
    if unequal:  # shown, but not a verdict: the difference is more than the technique
        note = "; ".join(f"{k} {sides[0][k]} vs {sides[1][k]}" for k in unequal)
        return _row(spec, effect, UNEQUAL, profile_t, f"treatment and control differ in {note} (not declared as "
                    "the thing tested)", budget=budget, written=written, seeds_only=seeds_only, p=math.nan)
    if spec.metric == "train_val_gap":  # overfitting: the side that should overfit must fit first
        side = spec.control if spec.expected_sign < 0 else spec.treatment
        fit, _, _ = results.per_seed(side, "train_acc")
        train_acc = sum(fit.values()) / len(fit) if fit else math.nan
        if not train_acc >= FIT_THRESHOLD:
            return _row(spec, effect, NOT_TESTABLE, profile_t, f"{side} does not fit its training images (train "
                        f"accuracy {train_acc:.3f} < {FIT_THRESHOLD}): there is no overfitting to reduce or add",
                        budget=budget, written=written, seeds_only=seeds_only, p=math.nan)
    return _row(spec, effect, verdict(effect, spec.expected_sign, margin), profile_t, null=null, budget=budget,
                written=written, seeds_only=seeds_only, p=p)


def measure(catalogue: list[ClaimSpec], stages_dir: str | os.PathLike, written: dict | None = None) -> pd.DataFrame:
    """Every claim of the catalogue measured on the results under ``stages_dir``, in its order,
    with Benjamini–Hochberg q-values and verdicts within each profile's claims (the family)."""
    results = Results(stages_dir)
    frame = pd.DataFrame([evaluate(spec, results, written) for spec in catalogue], columns=COLUMNS)
    frame["q_value"] = math.nan
    for _, family in frame.groupby("profile"):
        frame.loc[family.index, "q_value"] = bh_adjust(family["p_value"])
    frame["verdict_bh"] = [verdict_after_fdr(v, q, FDR_ALPHA) for v, q in zip(frame["verdict"], frame["q_value"])]
    return frame


def measure_sources(catalogue: list[ClaimSpec], sources: list[str | os.PathLike],
                    written: dict | None = None) -> pd.DataFrame:
    """:func:`measure` on each folder of stage results (one run each: a profile, a campaign, an
    archived run), one after another, with a ``source`` column; folders that hold no stage
    results are skipped."""
    frames = [measure(catalogue, d, written).assign(source=str(d)) for d in sources
              if any(Path(d).glob("*/metrics.json"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*COLUMNS, "source"])


def strongest(measured: pd.DataFrame) -> pd.DataFrame:
    """One row per claim, in catalogue order: its strongest measured evidence (the highest tier,
    :data:`TIERS`), or the first source's 'not measured' row; ``other_evidence`` lists the other
    sources' effects and verdicts beside it."""
    rank = {t: i for i, t in enumerate(TIERS)}
    rows = []
    for _, group in measured.groupby("id", sort=False):
        done = group[group["verdict"] != NOT_MEASURED]
        best = done.loc[done["tier"].map(rank).idxmax()] if len(done) else group.iloc[0]
        others = [f"{r.tier}: {r.effect:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] {r.verdict_bh}"
                  for r in done.itertuples() if r.Index != best.name]
        rows.append({**best.to_dict(), "other_evidence": "; ".join(others)})
    return pd.DataFrame(rows, columns=[*measured.columns, "other_evidence"])


def sentence(row: dict) -> str:
    """One measured claim (a row of :func:`evaluate`) as the Markdown sentence a notebook shows."""
    head = f"**{row['claim']}** ({row['section']}) — {row['comparison']}"
    note = f" ({row['note']})" if row.get("note") else ""
    if row["verdict"] == NOT_MEASURED:
        return f"{head}: {NOT_MEASURED}{note}."
    metric = row["metric"].replace("_", " ")
    effect = f"**{row['effect']:+.4f}**"
    if math.isfinite(row["ci_low"]):
        effect += f" (95% CI {row['ci_low']:+.4f} to {row['ci_high']:+.4f}, over {row['interval']})"
    return f"{head}, {metric}: {effect} → **{row['verdict']}**{note}."


def for_stage(catalogue: list[ClaimSpec], stage: str) -> list[ClaimSpec]:
    """The claims ``stage``'s notebook tests (:attr:`ClaimSpec.stage`), in the catalogue's order."""
    return [spec for spec in catalogue if spec.stage == stage]
