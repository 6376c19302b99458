"""Run one notebook stage of the DVC pipeline: papermill, then an HTML copy.

``dvc.yaml`` calls, for every notebook stage::

    python -m resnet_review.pipeline notebooks/01_baseline_resnet50.ipynb --stage baseline

which validates ``params.yaml`` (all of it, before anything runs), executes the notebook with
papermill under the profile that ``params.yaml`` selects, and writes
``<reports-dir>/<stage>/notebook.ipynb`` and ``notebook.html``.  The notebook receives the
parameters ``stage_name``, ``profile``, ``reports_dir`` and ``models_dir`` (and any ``-p KEY VALUE``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import ParamsError, Paths, load_params


class StoppedAtDeadline(RuntimeError):
    """The stage's notebook stopped at a campaign chunk's deadline; running it again continues."""


EXIT_AT_DEADLINE = 75  # EX_TEMPFAIL: try again later


def render_html(notebook: Path, html: Path) -> Path:
    """An HTML copy of an executed notebook, readable without Jupyter."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    html.write_text(body, encoding="utf-8")
    return html


def run_notebook(notebook: str | Path, stage: str, *, reports_dir: str = "reports/stages", models_dir: str = "models",
                 profile: str | None = None, extra: dict | None = None, root: Path | None = None) -> Path:
    """Execute ``notebook`` for ``stage`` and return the path of the executed copy."""
    import papermill

    paths = Paths(root)
    params = load_params(paths.params, profile=profile)  # fails here, before any kernel starts
    if stage not in params.stage_names():
        raise ParamsError(f"params.yaml has no section '{stage}'; add one (it may be empty: `{stage}: {{}}`)")
    notebook = Path(notebook)
    if not notebook.is_absolute():
        notebook = paths.root / notebook
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    out_dir = paths.stage_reports(stage, reports_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / "notebook.ipynb"
    parameters = {"stage_name": stage, "profile": params.profile, "reports_dir": reports_dir,
                  "models_dir": models_dir, **(extra or {})}
    def shown(path: Path) -> Path:
        return path.relative_to(paths.root) if path.is_relative_to(paths.root) else path

    print(f"[{stage}] running {shown(notebook)} (profile {params.profile}) -> {shown(executed)}", file=sys.stderr)
    t0 = time.perf_counter()
    # the kernel's stderr (per-epoch lines, test accuracy) streams to the console as it runs
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, cwd=str(paths.root),
                                   kernel_name="python3", progress_bar=sys.stderr.isatty(), stderr_file=sys.stderr)
    except papermill.PapermillExecutionError as err:
        if err.ename != "ChunkDeadline":
            raise
        # the notebook as far as it ran, readable; the finished epochs are in the resume checkpoints
        render_html(executed, out_dir / "notebook.html")
        raise StoppedAtDeadline(f"[{stage}] stopped at the chunk's deadline: {err.evalue}") from None
    render_html(executed, out_dir / "notebook.html")
    print(f"[{stage}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet_review.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="the notebook to run, e.g. notebooks/01_baseline_resnet50.ipynb")
    parser.add_argument("--stage", required=True, help="its section in params.yaml, e.g. baseline")
    parser.add_argument("--reports-dir", default="reports/stages")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--profile", choices=("smoke", "cpu", "gpu"), help="override params.yaml's profile")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="an extra notebook parameter (a string)")
    args = parser.parse_args(argv)
    try:
        run_notebook(args.notebook, args.stage, reports_dir=args.reports_dir, models_dir=args.models_dir,
                     profile=args.profile, extra=dict(args.parameter))
    except (ParamsError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    except StoppedAtDeadline as err:
        parser.exit(EXIT_AT_DEADLINE, f"{err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
