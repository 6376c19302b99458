"""The pipeline end to end, in a copy of the project under the smoke profile: `dvc repro`, the
README's recipe for a new technique, real metrics, rendered notebooks, and a no-op second run."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, project_env, sh

from resnet_review.results import HEADLINE
from resnet_review.stats import VERDICTS
from resnet_review.storage import free_bytes

ROOT = Path(__file__).resolve().parents[1]
# the first test waits for the smoke `dvc repro` of every stage
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
SMOKE_REPRO_GIB = 8  # the weights its stages keep (a seed's, the traced models), with room to spare


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- recipe:{marker} -->\n```yaml\n(.*?)```", text, re.S)
    assert match, f"README has no recipe:{marker} block"
    return match.group(1)


def add_readme_recipe(dest: Path) -> None:
    """The README's recipe for a new technique: its params, its claims, its dvc.yaml line, its notebook."""
    with (dest / "params.yaml").open("a") as params:
        params.write("\n" + readme_block("params"))
    with (dest / "claims.yaml").open("a") as claims:
        claims.write(readme_block("claims"))
    dvc = (dest / "dvc.yaml").read_text()
    anchor = "  technique:\n    foreach:\n"
    assert dvc.count(anchor) == 1
    (dest / "dvc.yaml").write_text(dvc.replace(anchor, anchor + readme_block("dvc")))
    shutil.copy(dest / "notebooks/templates/technique.ipynb", dest / "notebooks/20_my_technique.ipynb")


def one_seed(dest: Path) -> None:
    """The smoke profile with its first seed only: every stage keeps a ResNet-sized checkpoint per
    variant and seed, so one seed about halves the disk the repro holds, and CI's disk is not always
    large. Aggregating several seeds is tested in the fast tier (test_trained, test_stats)."""
    both, first = "    seeds: [0, 1]\n", "    seeds: [0]\n"
    params = (dest / "params.yaml").read_text()
    smoke = re.search(r"^  smoke:\n(?:    .*\n)+", params, re.M)
    assert smoke and smoke[0].count(both) == 1, "params.yaml's smoke profile no longer has seeds [0, 1]"
    block = smoke[0].replace(both, first)
    (dest / "params.yaml").write_text(params[:smoke.start()] + block + params[smoke.end():])


def smoke_repro_project(dest: Path) -> None:
    add_readme_recipe(dest)
    one_seed(dest)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project under the smoke profile with one seed, extended by the README's recipe,
    after `dvc repro`; the copy goes once the module's tests are done."""
    dest = copy_project(tmp_path_factory.mktemp("project"), results=False, edit=smoke_repro_project)
    free = free_bytes(dest) / 2**30
    if free < SMOKE_REPRO_GIB:  # say so now, not as a torch.save error ten minutes into the repro
        shutil.rmtree(dest, ignore_errors=True)
        pytest.fail(f"the smoke repro keeps about {SMOKE_REPRO_GIB} GiB of weights under models/ and only "
                    f"{free:.1f} GiB are free under {dest.parent}: free some disk space (or point TMPDIR elsewhere)")
    try:
        log = sh("dvc repro", dest, timeout=2700)  # ~20 stages of a minute or so each under smoke
        yield dest, log
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_repro_writes_real_metrics(project):
    dest, log = project
    metrics = json.loads((dest / "reports/stages/baseline/metrics.json").read_text())
    assert metrics["profile"] == "smoke"
    block = metrics["resnet50"]
    assert 0.0 <= block["test_acc"]["mean"] <= 1.0
    assert block["params_m"] == pytest.approx(23.52225)
    assert block["seeds"] == 1 and len(block["per_seed"]["test_acc"]) == 1
    # one seed gives no interval over seeds: written as null, never as a zero-width interval
    assert block["test_acc"]["ci_low"] is None and block["test_acc"]["ci_high"] is None
    assert block["latency_cpu_b1_ms"] > 0 and block["train_images_per_s"]["mean"] > 0
    weights = sorted((dest / "models/baseline/resnet50").glob("seed*.pt"))
    assert [w.name for w in weights] == ["seed0.pt"]
    assert not (dest / "models/_resume/baseline").exists()  # resume checkpoints dropped on success


def test_rendered_notebooks_hold_outputs(project):
    dest, _ = project
    for stage in ("data_overview", "baseline", "se", "fpn", "wide_deep", "my_technique"):
        nb = json.loads((dest / f"reports/stages/{stage}/notebook.ipynb").read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert any(o.get("output_type") == "display_data" for o in outputs), stage
        assert (dest / f"reports/stages/{stage}/notebook.html").stat().st_size > 10_000
    assert (dest / "reports/stages/baseline/figures/training_curves.png").is_file()


def test_the_repro_executes_every_notebook_once(project):
    """The smoke repro is where the notebooks run (the test suite does not run them under nbval a
    second time): each notebook source is executed and rendered by exactly one stage."""
    dest, _ = project
    sources = sorted(p.name for p in (dest / "notebooks").glob("*.ipynb"))
    rendered = {}
    for nb in [*dest.glob("reports/stages/*/notebook.ipynb"), dest / "reports/report/notebook.ipynb"]:
        source = json.loads(nb.read_text())["metadata"]["papermill"]["input_path"]
        rendered.setdefault(Path(source).name, []).append(nb.parent.name)
    assert sorted(rendered) == sources
    assert all(len(stages) == 1 for stages in rendered.values()), rendered


def test_readme_recipe_adds_a_technique_the_report_picks_up(project):
    dest, _ = project
    metrics = json.loads((dest / "reports/stages/my_technique/metrics.json").read_text())
    assert set(metrics["claims"]) == {"my_silu_improves_accuracy"}  # the recipe's claims.yaml entry
    assert metrics["claims"]["my_silu_improves_accuracy"]["verdict"] in VERDICTS
    assert metrics["claims"]["my_silu_improves_accuracy"]["comparison"] == "my_technique/silu vs baseline/resnet50"
    rendered = (dest / "reports/stages/my_technique/notebook.ipynb").read_text()
    assert "SiLU improves accuracy (recipe example)" in rendered
    assert "SiLU improves accuracy (recipe example)" in (dest / "reports/report/claims.md").read_text()
    assert metrics["silu_lr_0.05"]["test_acc"]["mean"] >= 0 and metrics["profile"] == "smoke"
    table = (dest / "reports/report/master_table.md").read_text()
    assert "my_technique" in table and "baseline" in table


def test_index_links_resolve(project):
    dest, _ = project
    index = (dest / "reports/index.html").read_text()
    links = re.findall(r'(?:href|src)="([^"]+)"', index)
    assert "stages/baseline/notebook.html" in links and "report/notebook.html" in links
    assert all((dest / "reports" / link).is_file() for link in links)


def chromium(*args: str, cwd: Path) -> str:
    """Debian's chromium, headless (``make test`` installs it)."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: run `make browser` (part of `make test`)")
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_index_renders_in_headless_chromium_and_every_link_opens(project, tmp_path):
    dest, _ = project
    index = dest / "reports/index.html"
    dom = chromium("--dump-dom", index.as_uri(), cwd=tmp_path)
    # the browser built the page: the master table with the baseline's row, and the notebook links
    assert "<table" in dom and ">baseline<" in dom and 'href="stages/baseline/notebook.html"' in dom
    # claims first: the claims table (with its FDR-controlled verdicts and tiers) and the forest plot
    # come before the figures, the notebook links and the master table
    first = [dom.index(marker) for marker in ('id="claims-table"', "claims_forest.png", "<h2>Figures</h2>",
                                              "<h2>Rendered notebooks</h2>", "<h2>Master table</h2>")]
    assert first == sorted(first)
    assert "verdict after BH" in dom and "smoke: a check of the code, not evidence" in dom
    links = re.findall(r'(?:href|src)="([^"]+)"', dom)
    pages = [link for link in links if link.endswith(".html")]
    assert len(pages) >= 3 and "report/notebook.html" in pages
    for link in links:
        target = (index.parent / link).resolve()
        assert target.is_file(), f"index.html links to {link}, which does not exist"
        if link.endswith(".html"):  # each rendered notebook opens: a page with its cells, not an error page
            page = chromium("--dump-dom", target.as_uri(), cwd=tmp_path)
            assert "jp-Notebook" in page or "jp-Cell" in page, f"{link} did not render as a notebook"
        else:
            assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{link} is not a PNG"
    shot = tmp_path / "index.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,1600", index.as_uri(), cwd=tmp_path)
    assert shot.stat().st_size > 20_000  # a rendered page with a table and figures, not a blank one


def test_every_folder_a_stage_commits_to_git_holds_a_file(project):
    """git keeps no empty folder: an out of `cache: false` that a stage leaves empty is missing from
    every clone, and `dvc status` there calls the stage changed."""
    dest, _ = project
    lock = yaml.safe_load((dest / "dvc.lock").read_text())["stages"]
    empty = [f"{stage}: {out['path']}" for stage, entry in lock.items() for out in entry.get("outs", [])
             if out.get("nfiles") == 0]
    assert not empty, f"stages left these folders empty: {empty}"


def test_dvc_sees_metrics_and_plots_and_a_second_repro_is_a_no_op(project):
    dest, _ = project
    shown = json.loads(sh("dvc metrics show --json", dest))
    files = {path: block["data"] for rev in shown.values() for path, block in rev["data"].items()}
    # the headline: a file per variant, the same few numbers in each (a table that fits a terminal)
    assert "reports/stages/baseline/headline/resnet50.json" in files
    assert not any(path.endswith("metrics.json") for path in files)
    assert set().union(*files.values()) == set(HEADLINE)
    assert all(0 <= row["test_acc"] <= 1 for row in files.values())
    sh("dvc params diff", dest)
    sh("dvc plots show -o plots_html", dest)
    assert (dest / "plots_html/index.html").is_file()
    assert "Data and pipelines are up to date" in sh("dvc repro", dest)


def test_a_plotting_change_re_renders_the_notebooks_and_retrains_no_model(project):
    """DVC re-runs a stage whose package changed; its runs load the weights they trained before
    (resnet_review.trained), so the same numbers come back without a training step."""
    dest, _ = project
    before = {s: json.loads((dest / f"reports/stages/{s}/metrics.json").read_text()) for s in ("baseline", "se")}
    with (dest / "src/resnet_review/plots.py").open("a") as plots:
        plots.write("\n# a change to the plots only\n")
    log = sh("dvc repro technique@se", dest)
    assert "Running stage 'baseline'" in log and "Running stage 'technique@se'" in log
    assert log.count("loaded, not retrained") == 2  # 1 seed x 2 stages; the training times below are the old ones
    for stage, old in before.items():
        new = json.loads((dest / f"reports/stages/{stage}/metrics.json").read_text())
        variant = "resnet50" if stage == "baseline" else "seresnet50"
        assert new[variant]["per_seed"] == old[variant]["per_seed"], stage


@pytest.mark.probe
def test_bad_params_stop_before_any_kernel_starts(project, tmp_path):
    dest, _ = project
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["profiles"]["smoke"]["epochs"] = 0
    bad = tmp_path / "bad"
    shutil.copytree(dest, bad, ignore=shutil.ignore_patterns("models", ".dvc", ".git", "data"))
    (bad / "params.yaml").write_text(yaml.safe_dump(params))
    before = (bad / "reports/stages/baseline/metrics.json").read_text()
    env = project_env()
    out = subprocess.run([sys.executable, "-m", "resnet_review.pipeline", "notebooks/01_baseline_resnet50.ipynb",
                          "--stage", "baseline", "--reports-dir", "reports/stages"], cwd=bad, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "profiles.smoke.epochs: Input should be greater than 0" in out.stderr
    assert (bad / "reports/stages/baseline/metrics.json").read_text() == before  # results already written are untouched

