"""How long each tier of the test suite takes: the fast tier (`pytest -m "not slow"`, run on every
change) and the full tier (`pytest`, what `make test` runs after the install).

    python benchmarks/test_tiers.py [--out reports/benchmarks/test_tiers.json]

Run it where `make test` would run (after `make install data browser postgres`), ideally in a fresh
clone on an idle machine: the figures are the machine's, and the suite's time follows its speed.
Exits non-zero, after writing the figures, if a tier fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the commands the README gives for each tier
TIERS = {"fast": ["-m", "not slow"], "full": []}
SLOWEST = 25  # the slowest test phases (set-up, call, teardown) recorded per tier: where its time goes
DURATION = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)")


class PeakDisk:
    """The most disk a command takes while it runs: the largest drop in free space (sampled every
    ``every`` s) on the file system of ``folder``, where pytest puts its temporary projects."""

    def __init__(self, folder: str, every: float = 2.0):
        from resnet_review.storage import free_bytes

        self.folder, self.every, self.free_bytes = folder, every, free_bytes
        self.start = self.least = free_bytes(folder)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.least = min(self.least, self.free_bytes(self.folder))

    def __enter__(self) -> PeakDisk:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        return round(max(0, self.start - self.least) / 2**30, 1)


def run_tier(args: list[str]) -> dict:
    t0 = time.monotonic()
    with PeakDisk(tempfile.gettempdir()) as disk:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", f"--durations={SLOWEST}", *args], cwd=ROOT,
                             capture_output=True, text=True)
    seconds = time.monotonic() - t0
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", summary)}
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-5000:] + out.stderr[-2000:])
    return {"command": " ".join(["pytest", *args]), "seconds": round(seconds, 1), "minutes": round(seconds / 60, 1),
            "returncode": out.returncode, "peak_disk_gib": disk.gib,
            "counts": counts, "summary": summary, "slowest": slowest(out.stdout)}


def slowest(output: str) -> list[dict]:
    """The ``--durations`` lines of a pytest run: seconds, phase and test id, slowest first."""
    found = (DURATION.match(line.strip()) for line in output.splitlines())
    return [{"seconds": float(m[1]), "phase": m[2], "test": m[3]} for m in found if m]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_speed() -> float:
    """ResNet50 training images/s on this machine (batch 128, 1 x 24 x 24, SGD, plain PyTorch, after
    two warm-up steps): the figure that says how a suite's time on one machine carries to another."""
    import time as clock

    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("resnet50", num_classes=10, in_chans=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(128, 1, 24, 24), torch.randint(0, 10, (128,))
    steps = []
    for _ in range(8):
        t0 = clock.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        steps.append(clock.perf_counter() - t0)
    return round(128 * 6 / sum(steps[2:]), 1)


def addopts() -> str:
    """The options every pytest run of the suite adds (pyproject.toml): its xdist workers among them."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["pytest"]["ini_options"].get("addopts", "")


def commit() -> str | None:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks/test_tiers.json")
    args = parser.parse_args(argv)
    tiers = {}
    for name, tier_args in TIERS.items():
        print(f"tier {name}: pytest {' '.join(tier_args)} …", flush=True)
        tiers[name] = run_tier(tier_args)
        print(f"  {tiers[name]['summary']}", flush=True)
    result = {
        "fast_tier": tiers["fast"],
        "full_tier": tiers["full"],
        "pytest_addopts": addopts(),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "cpu_model": cpu_model(), "python": platform.python_version(),
                    "resnet50_train_images_per_s": training_speed()},
        "commit": commit(),
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"fast tier {result['fast_tier']['minutes']} min, full tier {result['full_tier']['minutes']} min "
          f"(at most {result['full_tier']['peak_disk_gib']} GiB of disk) -> {args.out}")
    return 0 if all(t["returncode"] == 0 for t in tiers.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
