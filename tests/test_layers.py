"""The package's imports run downward only: core -> engine -> runtime -> techniques -> report.

The package's ``__init__`` sits above them all: it imports :mod:`resnet_review.techniques` (so that
importing any module registers every technique's params schema), and no module imports it.

Every import inside ``resnet_review`` counts, those deferred into a function or kept for type
checking too: a module may import its own layer or a lower one, and no set of modules imports
itself round. A new module must be given its layer here (and a line in docs/layout.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "resnet_review"

TECHNIQUES = ["augmentation", "compression", "distillation", "limitations", "synergy", "transfer", "tuning"]
LAYERS = {
    "core": ["_version", "process", "storage", "stats", "data", "models", "models.registry", "models.fpn",
             "models.hff", "models.mmff", "config", "distributed"],
    "engine": ["engine", "evaluate", "robustness", "profiling"],
    "runtime": ["runs", "results", "claims", "presentation", "trained", "experiment", "pipeline", "prepare",
                "train_model"],
    "techniques": ["techniques", *(f"techniques.{m}" for m in TECHNIQUES)],
    "report": ["plots", "report", "campaign"],
    # the package itself imports the techniques, so that importing any module registers their schemas
    "package": ["resnet_review"],
}
RANK = {(m if m == "resnet_review" else f"resnet_review.{m}"): i
        for i, modules in enumerate(LAYERS.values()) for m in modules}
LAYER_OF = {m: name for name, modules in LAYERS.items() for m in modules}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("resnet_review"):
                continue
            for alias in node.names:  # `from . import models` imports the module resnet_review.models
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in RANK else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("resnet_review")}
    return found - {name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) and (on.discard(w) or w != v):
                component.append(w)
            component.append(v)
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    assert set(graph()) == set(RANK), "give each new module a layer in LAYERS (and docs/layout.md)"


def test_imports_run_downward_only():
    upward = [f"{m} ({LAYER_OF[m.removeprefix('resnet_review.') or m]}) imports {t}"
              for m, targets in graph().items() for t in sorted(targets)
              if t in RANK and m in RANK and RANK[t] > RANK[m]]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
