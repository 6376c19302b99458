"""Run one notebook stage of the DVC pipeline: papermill, then an HTML copy.

``dvc.yaml`` calls, for every notebook stage::

    python -m resnet_review.pipeline notebooks/01_baseline_resnet50.ipynb --stage baseline

which validates ``params.yaml`` (all of it, before anything runs), executes the notebook with
papermill under the profile that ``params.yaml`` selects, and writes
``<reports-dir>/<stage>/notebook.ipynb`` and ``notebook.html``.  The notebook receives the
parameters ``stage_name``, ``profile``, ``reports_dir`` and ``models_dir`` (and any ``-p KEY VALUE``).

A run never loses the results it replaces: the stage's folder is set aside before the notebook
starts and put back if the run fails, is interrupted or is killed (the next run puts it back
then); the failed notebook is kept beside it for reading.  One run of a stage at a time holds the
stage's lock, and the notebook's kernel dies with the runner, which dies with its parent (`dvc`),
so a killed `dvc repro` leaves no training behind (a run started by hand outlives its shell).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import ParamsError, Paths, load_params
from .process import DIE_WITH_PARENT_ENV, die_with_launcher


class StoppedAtDeadline(RuntimeError):
    """The stage's notebook stopped at a campaign chunk's deadline; running it again continues."""


EXIT_AT_DEADLINE = 75  # EX_TEMPFAIL: try again later


class StageBusy(RuntimeError):
    """Another run of the same stage holds its lock."""


class StageFailed(RuntimeError):
    """The stage's notebook raised; its previous results were put back."""


def run_dir(paths: Paths, out_dir: Path) -> Path:
    """Where a stage run keeps its lock, the results it set aside and a failed notebook
    (under ``reports/scratch``, never committed)."""
    if out_dir.is_relative_to(paths.root):
        return paths.root / "reports" / "scratch" / "runs" / out_dir.relative_to(paths.root)
    return out_dir.parent / ".runs" / out_dir.name


@contextmanager
def stage_lock(lock: Path, stage: str) -> Iterator[None]:
    """Hold ``lock`` (an exclusive ``flock``, released by the kernel when the holder dies) or
    refuse at once, naming the process that holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise StageBusy(f"stage '{stage}' is already running (pid {holder}, lock {lock}); "
                            "wait for it to finish or stop that process") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _put_back(previous: Path, out_dir: Path) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
    if previous.exists():
        os.replace(previous, out_dir)


def put_back_killed_run(out_dir: Path, runs: Path, stage: str) -> None:
    """A run killed outright (SIGKILL, power) left its predecessor's results set aside: restore them."""
    previous = runs / "previous"
    if previous.exists():
        print(f"[{stage}] an earlier run of this stage was killed: restoring the results it replaced", file=sys.stderr)
        _put_back(previous, out_dir)


@contextmanager
def replaced_on_success(out_dir: Path, runs: Path) -> Iterator[None]:
    """Set ``out_dir`` aside, let the run write a fresh one, and keep it only if the run ends
    well (or stops at a chunk's deadline, to be continued); otherwise put the previous one back
    and keep the failed notebook as ``<runs>/failed.ipynb``."""
    previous = runs / "previous"
    runs.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        os.replace(out_dir, previous)
    out_dir.mkdir(parents=True)
    try:
        yield
    except StoppedAtDeadline:
        shutil.rmtree(previous, ignore_errors=True)
        raise
    except BaseException:
        failed = out_dir / "notebook.ipynb"
        if failed.exists():
            os.replace(failed, runs / "failed.ipynb")
        _put_back(previous, out_dir)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the context managers: the results are put back


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
    paths = Paths(root)
    out_dir = paths.stage_reports(stage, reports_dir)
    runs = run_dir(paths, out_dir)
    with stage_lock(runs.with_name(runs.name + ".lock"), stage):
        put_back_killed_run(out_dir, runs, stage)
        params = load_params(paths.params, profile=profile)  # fails here, before any kernel starts
        if stage not in params.stage_names():
            raise ParamsError(f"params.yaml has no section '{stage}'; add one (it may be empty: `{stage}: {{}}`)")
        notebook = Path(notebook)
        if not notebook.is_absolute():
            notebook = paths.root / notebook
        if not notebook.is_file():
            raise FileNotFoundError(f"notebook {notebook} does not exist")
        parameters = {"stage_name": stage, "profile": params.profile, "reports_dir": reports_dir,
                      "models_dir": models_dir, **(extra or {})}
        with replaced_on_success(out_dir, runs):
            return _execute(notebook, out_dir, runs, stage, parameters, paths)


def _execute(notebook: Path, out_dir: Path, runs: Path, stage: str, parameters: dict, paths: Paths) -> Path:
    import papermill

    def shown(path: Path) -> Path:
        return path.relative_to(paths.root) if path.is_relative_to(paths.root) else path

    executed = out_dir / "notebook.ipynb"
    print(f"[{stage}] running {shown(notebook)} (profile {parameters['profile']}) -> {shown(executed)}",
          file=sys.stderr)
    t0 = time.perf_counter()
    os.environ[DIE_WITH_PARENT_ENV] = "1"  # the kernel (a child of this process) dies with it
    # the kernel's stderr (per-epoch lines, test accuracy) streams to the console as it runs
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, cwd=str(paths.root),
                                   kernel_name="python3", progress_bar=sys.stderr.isatty(), stderr_file=sys.stderr)
    except papermill.PapermillExecutionError as err:
        if err.ename == "ChunkDeadline":
            # the notebook as far as it ran, readable; the finished epochs are in the resume checkpoints
            render_html(executed, out_dir / "notebook.html")
            raise StoppedAtDeadline(f"[{stage}] stopped at the chunk's deadline: {err.evalue}") from None
        raise StageFailed(f"[{stage}] {shown(notebook)} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                          f"  the previous results in {shown(out_dir)} are kept; the failed notebook is "
                          f"{shown(runs / 'failed.ipynb')}") from None
    finally:
        os.environ.pop(DIE_WITH_PARENT_ENV, None)
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
    if os.environ.get("DVC_STAGE"):  # set by dvc for a stage's command
        die_with_launcher()  # a killed `dvc repro` takes this run (and its kernel) with it
    signal.signal(signal.SIGTERM, _terminated)
    try:
        run_notebook(args.notebook, args.stage, reports_dir=args.reports_dir, models_dir=args.models_dir,
                     profile=args.profile, extra=dict(args.parameter))
    except (ParamsError, FileNotFoundError, StageBusy) as err:
        parser.exit(2, f"error: {err}\n")
    except StageFailed as err:
        parser.exit(1, f"error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"[{args.stage}] interrupted; its previous results are kept\n")
    except StoppedAtDeadline as err:
        parser.exit(EXIT_AT_DEADLINE, f"{err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
