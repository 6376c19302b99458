"""The README is a short guide and holds no typed result (STYLE rule 13): every number in README.md
or docs/*.md that looks like a measurement must be one a generated file holds."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ["reports/RESULTS.md", "reports/report/*.md", "reports/benchmarks/*.json",
             "reports/gpu/**/*.md", "reports/gpu/**/*.json"]
NUMBER = r"\d+(?:[.,]\d+)*"
# What looks like a measurement: a decimal, anything after ± or ×, and a value with a unit.
MEASUREMENT = re.compile(
    rf"(?<![\w.])(?:(?:±|×|x)\s?(?P<after>{NUMBER})"
    rf"|(?P<unit>{NUMBER})\s?(?:×|x\b|ms\b|MB\b|GB\b|GiB\b|s\b|min\b|%|images/s\b)"
    rf"|(?P<decimal>\d+\.\d+)(?![.\d]))")
# Settings, not measurements; each is a value the code or params.yaml sets.
ALLOWED = {
    "5%",      # the false discovery rate the report controls, and the engine's data-share goal
    "0.05",    # a params value in the recipe (lr) and the FDR as a q-value bound
    "60 min",  # the time goal of the cpu repro and of the gpu plan
    "1.7x",    # the pruning speed-up goal (benchmarks/compression.py)
    "3x",      # the int8 speed-up goal
    "3.11",    # Python's version
    "2.1",     # SQLAlchemy's version
    "300 s",   # the per-test timeout (pyproject.toml)
}


def measurements(text: str) -> list[str]:
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)  # commands and config: settings, not results
    found = []
    for match in MEASUREMENT.finditer(text):
        if match.group(0).strip() in ALLOWED or match.group(0) in ALLOWED:
            continue
        found.append(match.group(0).strip())
    return found


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:\.\d+)?", text))


def generated_numbers() -> set[str]:
    held = set()
    for pattern in GENERATED:
        for path in ROOT.glob(pattern):
            held |= numbers_in(path.read_text(encoding="utf-8", errors="replace"))
    return held


def unbacked(text: str, held: set[str]) -> list[str]:
    return [m for m in measurements(text) if not numbers_in(m) <= held]


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_holds_no_result_number_that_no_generated_file_holds(page):
    missing = unbacked(page.read_text(encoding="utf-8"), generated_numbers())
    assert not missing, f"{page.name} types results no generated file holds: {missing}"


def test_the_check_catches_a_typed_result():
    held = {"0.704", "1.014"}
    assert unbacked("accuracy 0.704 ± 0.015, 1.014× the loop, 65 min", held) == ["± 0.015", "65 min"]
    assert unbacked("torch 2.14.1, 3 seeds, batch 512, FDR at 5%", held) == []
    assert unbacked("the repro keeps 12 GiB of weights", held) == ["12 GiB"]
    assert unbacked("```bash\ndvc exp run -S train.lr=0.02\n```\n", held) == []


def test_readme_is_a_short_guide_that_links_the_results():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "reports/RESULTS.md" in text and "<!-- results:begin -->" not in text


@pytest.mark.slow  # collects the whole suite in a process of its own
def test_the_report_of_probes_in_the_readme_counts_these_tests():
    """The README's reliability figure is the number of probe tests, not a typed-in number."""
    collect = [sys.executable, "-m", "pytest", "-n", "0", "--collect-only", "-q", "-m", "probe", "tests"]
    collected = subprocess.run(collect, cwd=ROOT, capture_output=True, text=True)
    n = sum(1 for line in collected.stdout.splitlines() if "::" in line)
    readme = (ROOT / "README.md").read_text()
    assert f"{n} probes" in readme, f"README should state {n} probes"
