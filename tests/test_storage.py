"""Atomic writes: identical content gives identical bytes, a failed write keeps the old file, a
killed writer's leftovers are cleaned up, and metrics.json is never left half written."""

import errno
import hashlib
import json
import os
import time

import pytest
import torch

from resnet_review import storage
from resnet_review.results import AtomicLive


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.probe
def test_saving_the_same_content_twice_gives_the_same_bytes(tmp_path):
    obj = {"weights": torch.arange(10.0), "epoch": 3}
    storage.atomic_save(obj, tmp_path / "a.pt")
    storage.atomic_save(obj, tmp_path / "b.pt")
    storage.atomic_save(obj, tmp_path / "a.pt")  # again over itself
    assert md5(tmp_path / "a.pt") == md5(tmp_path / "b.pt")
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=True)["weights"], obj["weights"])


@pytest.mark.probe
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = storage.atomic_write_text(tmp_path / "m.json", '{"old": 1}\n')

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        storage.atomic_save({"x": Unsaveable()}, path)
    assert path.read_text() == '{"old": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.mark.probe
def test_a_killed_writers_old_leftover_is_removed_and_a_fresh_one_kept(tmp_path):
    old = tmp_path / ".w.pt.abc.tmp"
    fresh = tmp_path / ".w.pt.def.tmp"
    old.write_bytes(b"half a checkpoint")
    fresh.write_bytes(b"a save in progress")
    past = time.time() - storage.STALE_TMP_S - 60
    os.utime(old, (past, past))
    storage.atomic_save({"a": 1}, tmp_path / "w.pt")
    assert not old.exists() and fresh.exists()


@pytest.mark.probe
def test_metrics_json_survives_a_summary_that_fails_midway(tmp_path, monkeypatch):
    live = AtomicLive(str(tmp_path), report=None, save_dvc_exp=False, dvcyaml=None)
    live.summary["test_acc"] = 0.9
    live.make_summary()
    good = (tmp_path / "metrics.json").read_text()
    assert json.loads(good)["test_acc"] == 0.9
    live.summary["test_acc"] = 0.1

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. a kill while the summary is being serialised

    monkeypatch.setattr(storage.os, "fsync", broken)
    with pytest.raises(KeyboardInterrupt):
        live.make_summary()
    assert (tmp_path / "metrics.json").read_text() == good
    assert not list(tmp_path.glob(".metrics.json.*.tmp"))


@pytest.mark.probe
def test_preparing_the_data_twice_gives_the_same_md5(paths, tmp_path):
    from resnet_review.data import prepare

    prepare(paths.raw, tmp_path / "a/fashion_mnist.pt", val_size=5000, split_seed=0)
    prepare(paths.raw, tmp_path / "b/fashion_mnist.pt", val_size=5000, split_seed=0)
    assert md5(tmp_path / "a/fashion_mnist.pt") == md5(tmp_path / "b/fashion_mnist.pt")


@pytest.mark.probe
def test_a_write_that_fills_the_disk_says_so_and_keeps_the_old_file(tmp_path, monkeypatch):
    # torch's zip writer reports a full disk only as "unexpected pos N vs M", naming no file
    path = storage.atomic_write_text(tmp_path / "seed0.pt", "old weights")
    monkeypatch.setattr(storage, "free_bytes", lambda folder: 5 * 2**20)

    def fill(handle):
        handle.write(b"x" * 2**20)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 72808000 vs 72807888")

    with pytest.raises(OSError, match=r"no space left on the device holding .* while writing seed0\.pt "
                                      r"\(1 MiB written, 5 MiB free\)") as caught:
        storage._atomic_write(path, fill)
    assert caught.value.errno == errno.ENOSPC and "unexpected pos" in str(caught.value.__cause__)
    assert path.read_text() == "old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0.pt"]

    # with room left, the same failure is not blamed on the disk
    monkeypatch.setattr(storage, "free_bytes", lambda folder: 10 * 2**30)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        storage._atomic_write(path, fill)


def test_free_bytes_is_what_statvfs_reports_for_this_user(tmp_path):
    stat = os.statvfs(tmp_path)
    blocks = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
    assert abs(storage.free_bytes(tmp_path) - blocks * stat.f_frsize) < 2**30
