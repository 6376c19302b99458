"""scripts/gpu_profile.py: stages side by side, a stage out of time or failing, the report last."""

import subprocess
import threading
import time


def test_stages_run_side_by_side_failures_are_listed_and_the_report_runs_last(load_repo_module):
    gpu_profile = load_repo_module("scripts/gpu_profile.py")
    running, most, order, lock = set(), [0], [], threading.Lock()

    def runner(name, notebook, reports, timeout_s):
        with lock:
            running.add(name)
            most[0] = max(most[0], len(running))
            order.append(name)
        time.sleep(0.2)
        with lock:
            running.discard(name)
        if name == "swish":
            raise subprocess.TimeoutExpired(["pipeline"], timeout_s)
        if name == "hff":
            raise subprocess.CalledProcessError(1, ["pipeline"])
        return 1.5

    stages = [("swish", "a"), ("fpn", "b"), ("hff", "c"), ("report", "r")]
    timings, failed = gpu_profile.run_stages(stages, "out", jobs=3, timeout_s=420, runner=runner)
    assert most[0] == 3  # the three training stages at once
    assert order[-1] == "report"  # after all of them
    assert sorted(failed) == ["hff", "swish"]
    assert timings == {"fpn": 1.5, "report": 1.5}


def test_one_job_runs_the_stages_in_file_order(load_repo_module):
    gpu_profile = load_repo_module("scripts/gpu_profile.py")
    order = []
    timings, failed = gpu_profile.run_stages([("baseline", "a"), ("se", "b"), ("report", "r")], "out",
                                             runner=lambda name, *_: order.append(name) or 2.0)
    assert order == ["baseline", "se", "report"] and failed == []
