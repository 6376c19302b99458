import gzip
import hashlib
import shutil

import numpy as np
import pytest
import torch

from resnet_review.data import (
    CLASSES,
    RAW_FILES,
    DataIntegrityError,
    load_image_folder,
    load_prepared,
    parse_idx,
    prepare,
    read_idx,
    split_indices,
    stratified_subset,
    to_model_input,
    verify_raw,
)


def test_read_idx_parses_the_real_test_labels(paths):
    labels = read_idx(paths.raw / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [1000] * 10  # Fashion-MNIST's test set is balanced


def test_parse_idx_rejects_bad_magic_and_wrong_length():
    good = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    assert parse_idx(good).tolist() == [1, 2, 3]
    with pytest.raises(DataIntegrityError, match="bad magic"):
        parse_idx(b"\x01\x02\x03\x04" + good[4:])
    with pytest.raises(DataIntegrityError, match="needs 11"):
        parse_idx(good[:-1])


@pytest.fixture
def raw_copy(paths, tmp_path):
    folder = tmp_path / "raw"
    shutil.copytree(paths.raw, folder)
    return folder


def test_verify_raw_accepts_the_real_files(paths):
    arrays = verify_raw(paths.raw)
    assert arrays["train_images"].shape == (60_000, 28, 28)


@pytest.mark.probe
def test_a_corrupt_file_is_named_with_its_expected_hash_and_nothing_is_written(raw_copy, tmp_path):
    name, md5, _ = RAW_FILES["train_labels"]
    raw = bytearray(gzip.decompress((raw_copy / name).read_bytes()))
    raw[100] ^= 0xFF  # one flipped byte, still a valid gzip and IDX file
    (raw_copy / name).write_bytes(gzip.compress(bytes(raw)))
    out = tmp_path / "prepared.pt"
    with pytest.raises(DataIntegrityError) as err:
        prepare(raw_copy, out, val_size=5000, split_seed=0)
    assert name in str(err.value) and md5 in str(err.value)
    assert hashlib.md5(bytes(raw)).hexdigest() in str(err.value)
    assert not out.exists()


@pytest.mark.probe
def test_a_truncated_file_is_reported(raw_copy):
    name, md5, _ = RAW_FILES["test_images"]
    data = (raw_copy / name).read_bytes()
    (raw_copy / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataIntegrityError, match=f"{name}: cannot be read .*corrupt or truncated.*expected "
                                                 f"decompressed md5 {md5}"):
        verify_raw(raw_copy)


@pytest.mark.probe
def test_missing_prepared_data_points_at_the_stage_that_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `dvc repro prepare` first"):
        load_prepared(tmp_path / "nope.pt")


@pytest.mark.probe
def test_a_missing_file_is_reported(raw_copy):
    name, md5, _ = RAW_FILES["test_labels"]
    (raw_copy / name).unlink()
    with pytest.raises(DataIntegrityError, match=f"{name}: file is missing.*{md5}"):
        verify_raw(raw_copy)


@pytest.mark.probe
def test_prepare_keeps_an_existing_output_when_it_fails(raw_copy, tmp_path):
    out = tmp_path / "prepared.pt"
    prepare(raw_copy, out, val_size=1000, split_seed=3)
    before = out.read_bytes()
    (raw_copy / RAW_FILES["train_images"][0]).write_bytes(b"not a gzip")
    with pytest.raises(DataIntegrityError):
        prepare(raw_copy, out, val_size=1000, split_seed=3)
    assert out.read_bytes() == before


def test_split_is_deterministic_disjoint_and_complete():
    train_a, val_a = split_indices(60_000, 5000, seed=0)
    train_b, val_b = split_indices(60_000, 5000, seed=0)
    assert np.array_equal(val_a, val_b) and np.array_equal(train_a, train_b)
    assert len(np.intersect1d(train_a, val_a)) == 0 and len(train_a) + len(val_a) == 60_000
    assert not np.array_equal(split_indices(60_000, 5000, seed=1)[1], val_a)


def test_prepared_file_holds_the_untouched_test_set(paths):
    prepared = load_prepared(paths.prepared)
    assert len(prepared["train_labels"]) + len(prepared["val_labels"]) == 60_000
    test_images = read_idx(paths.raw / RAW_FILES["test_images"][0])
    assert torch.equal(prepared["test_images"], torch.from_numpy(test_images.copy()))


def test_stratified_subset_is_balanced_and_seeded(paths):
    labels = load_prepared(paths.prepared)["train_labels"]
    index = stratified_subset(labels, 1000, seed=0)
    assert torch.bincount(labels[index]).tolist() == [100] * 10
    assert torch.equal(index, stratified_subset(labels, 1000, seed=0))
    assert not torch.equal(index, stratified_subset(labels, 1000, seed=1))


@pytest.mark.parametrize("img_size,in_chans", [(28, 1), (32, 3), (14, 1)])
def test_model_input_resolution_and_channels(paths, img_size, in_chans):
    images = load_prepared(paths.prepared)["test_images"][:16]
    x = to_model_input(images, img_size, in_chans)
    assert x.shape == (16, in_chans, img_size, img_size) and x.dtype == torch.float32
    if in_chans == 3:
        assert torch.equal(x[:, 0], x[:, 2])
    assert -1 < x.min() < 0 < x.max() < 3  # normalised with the training statistics


def test_image_folder_loader_reads_a_users_folder(paths, tmp_path):
    from PIL import Image

    prepared = load_prepared(paths.prepared)
    for i in range(6):  # real test images written out as PNG files, two classes
        label = int(prepared["test_labels"][i])
        folder = tmp_path / CLASSES[label].replace("/", "_")
        folder.mkdir(exist_ok=True)
        Image.fromarray(prepared["test_images"][i].numpy()).save(folder / f"{i}.png")
    data = load_image_folder(tmp_path, img_size=32, in_chans=3)
    assert data.inputs[0].shape == (6, 3, 32, 32)
    assert len(data.classes) == len(list(tmp_path.iterdir()))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope", img_size=32)


def test_views_split_each_image_into_its_two_halves(tiny_splits):
    from resnet_review.data import apply_view

    test = tiny_splits.test
    top, bottom = apply_view(test, "pair").inputs
    assert top.shape == bottom.shape == (len(test), 1, 14, 28)
    assert torch.equal(torch.cat([top, bottom], dim=2), test.inputs[0])
    assert apply_view(test, "stacked").inputs[0].shape == (len(test), 2, 14, 28)
    assert torch.equal(apply_view(test, "bottom").inputs[0], bottom)
    with pytest.raises(ValueError, match="has 2 inputs already"):
        apply_view(apply_view(test, "pair"), "top")
    with pytest.raises(ValueError, match="unknown view 'left'"):
        apply_view(test, "left")


def _write_pngs(root, images, labels, names):
    from PIL import Image

    for image, label, name in zip(images, labels, names):
        folder = root / CLASSES[int(label)].replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy()).save(folder / f"{name}.png")


def test_paired_folders_load_aligned_modalities_and_refuse_unpaired_samples(paths, tmp_path):
    from resnet_review.data import load_paired_folders

    prepared = load_prepared(paths.prepared)
    images, labels = prepared["test_images"][:8], prepared["test_labels"][:8]
    names = [f"sample{i}" for i in range(8)]
    _write_pngs(tmp_path / "a", images[:, :14], labels, names)  # two real modalities: the halves
    _write_pngs(tmp_path / "b", images[:, 14:], labels, names)
    data = load_paired_folders(tmp_path / "a", tmp_path / "b", img_size=16)
    assert [tuple(x.shape) for x in data.inputs] == [(8, 1, 16, 16)] * 2
    # labels index the folder's own classes (its sub-folders, sorted)
    assert sorted(data.classes[t] for t in data.targets) == sorted(CLASSES[i].replace("/", "_") for i in labels)
    assert not torch.equal(data.inputs[0], data.inputs[1])

    next((tmp_path / "b").rglob("sample3.png")).unlink()
    with pytest.raises(ValueError, match=r"1 only in .*a \(e.g. \['.*sample3'\]\)"):
        load_paired_folders(tmp_path / "a", tmp_path / "b", img_size=16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_paired_folders(tmp_path / "a", tmp_path / "missing", img_size=16)
