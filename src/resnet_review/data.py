"""Fashion-MNIST from its raw IDX files, verified, split and held in memory as tensors.

The raw files (``data/raw``, tracked by ``data.dvc``) are only ever read.  :func:`prepare`
verifies the md5 of every decompressed file before it writes anything, then stores a seeded
train/validation split beside the untouched test set.  :func:`load_splits` turns that into
:class:`TensorData` at the resolution, channel count and subset sizes of the profile, placed on
the training device once, so batches are index slices and never wait on a loader.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .storage import atomic_save

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# md5 of the *decompressed* IDX bytes: Debian recompressed the .gz files, so their own hashes
# differ from upstream's, but the content is Zalando's release byte for byte.
RAW_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a", (60_000, 28, 28)),
    "train_labels": ("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9", (60_000,)),
    "test_images": ("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a", (10_000, 28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965", (10_000,)),
}

# Per-pixel statistics of the Fashion-MNIST training images (scaled to [0, 1]).
MEAN, STD = 0.2860, 0.3530
# A user's image folder is scaled to [-1, 1]: no dataset statistics are assumed.
FOLDER_MEAN, FOLDER_STD = 0.5, 0.5

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataIntegrityError(RuntimeError):
    """A raw data file is missing, truncated or not the file the project expects."""


# --------------------------------------------------------------------------- IDX
def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """The decompressed bytes of an IDX file (gzip or plain)."""
    path = Path(path)
    if not path.is_file():
        raise DataIntegrityError(f"{path}: file is missing")
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataIntegrityError(f"{path}: cannot be read ({err}); the file is corrupt or truncated") from None


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (magic ``0 0 dtype ndim``, big-endian dims, then the data)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataIntegrityError(f"{name}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataIntegrityError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataIntegrityError(f"{name}: {len(raw)} bytes, but its header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    return parse_idx(read_idx_bytes(path), str(path))


def verify_raw(raw_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the four raw files, checking each against its expected md5 and shape.

    Raises :class:`DataIntegrityError` naming the file and the expected hash; nothing is written.
    """
    raw_dir = Path(raw_dir)
    arrays = {}
    for key, (filename, md5, shape) in RAW_FILES.items():
        path = raw_dir / filename
        expected = f"expected decompressed md5 {md5}; restore the raw files with `make data`"
        try:
            raw = read_idx_bytes(path)
        except DataIntegrityError as err:
            raise DataIntegrityError(f"{err} ({expected})") from None
        actual = hashlib.md5(raw).hexdigest()
        if actual != md5:
            raise DataIntegrityError(f"{path}: decompressed md5 is {actual}, {expected} (the file is corrupt, "
                                     "truncated or not Fashion-MNIST)")
        array = parse_idx(raw, str(path))
        if array.shape != shape:
            raise DataIntegrityError(f"{path}: shape {array.shape}, expected {shape}")
        arrays[key] = array
    return arrays


# --------------------------------------------------------------------------- prepare
def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, class-agnostic split of ``range(n)`` into (train, validation) indices."""
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be in (0, {n}), got {val_size}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def prepare(raw_dir: str | os.PathLike, out_path: str | os.PathLike, val_size: int, split_seed: int) -> dict:
    """Verify the raw files, split train into train/validation, and write one tensor file.

    The test set is kept whole and untouched.  Returns a summary of the split sizes.
    """
    arrays = verify_raw(raw_dir)
    train_idx, val_idx = split_indices(len(arrays["train_labels"]), val_size, split_seed)
    out = {
        "train_images": torch.from_numpy(arrays["train_images"][train_idx].copy()),
        "train_labels": torch.from_numpy(arrays["train_labels"][train_idx].astype(np.int64)),
        "val_images": torch.from_numpy(arrays["train_images"][val_idx].copy()),
        "val_labels": torch.from_numpy(arrays["train_labels"][val_idx].astype(np.int64)),
        "test_images": torch.from_numpy(arrays["test_images"].copy()),
        "test_labels": torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        "val_source_index": torch.from_numpy(val_idx),
        "meta": {"val_size": val_size, "split_seed": split_seed, "classes": list(CLASSES),
                 "raw_md5": {k: v[1] for k, v in RAW_FILES.items()}},
    }
    atomic_save(out, out_path)
    return {"train": len(train_idx), "val": len(val_idx), "test": len(out["test_labels"])}


def load_prepared(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `dvc repro prepare` first "
                                "(after `make data`, which installs the raw files)")
    return torch.load(path, weights_only=True)


# --------------------------------------------------------------------------- tensors
@dataclass
class TensorData:
    """A labelled dataset held as tensors.  ``inputs`` is a tuple so that models with more than
    one input (one tensor per modality) use the same engine."""

    inputs: tuple[torch.Tensor, ...]
    targets: torch.Tensor
    classes: tuple[str, ...] = CLASSES
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.inputs, torch.Tensor):
            self.inputs = (self.inputs,)
        self.inputs = tuple(self.inputs)
        n = len(self.targets)
        for i, x in enumerate(self.inputs):
            if len(x) != n:
                raise ValueError(f"input {i} of {self.name or 'dataset'} has {len(x)} rows, targets have {n}")

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def device(self) -> torch.device:
        return self.targets.device

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: str | torch.device) -> "TensorData":
        return TensorData(tuple(x.to(device) for x in self.inputs), self.targets.to(device),
                          self.classes, self.name, self.meta)

    def take(self, index: torch.Tensor) -> "TensorData":
        index = index.to(self.targets.device)
        return TensorData(tuple(x[index] for x in self.inputs), self.targets[index],
                          self.classes, self.name, self.meta)


@dataclass
class Splits:
    train: TensorData
    val: TensorData
    test: TensorData

    def __iter__(self):
        return iter((self.train, self.val, self.test))


def stratified_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of ``size`` rows with classes as balanced as the data allows, seeded."""
    n = len(labels)
    if size >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    # rank of each row within its class in the shuffled order; a stable sort on that rank takes
    # one image of every class before a second of any.
    shuffled = labels.cpu()[order]
    rank = torch.empty(n, dtype=torch.long)
    for c in shuffled.unique():
        pos = (shuffled == c).nonzero().squeeze(1)
        rank[pos] = torch.arange(len(pos))
    picked = order[torch.argsort(rank, stable=True)[:size]]
    return picked.sort().values


def to_model_input(images: torch.Tensor, img_size: int = 28, in_chans: int = 1,
                   chunk: int = 8192) -> torch.Tensor:
    """uint8 ``(N, H, W)`` images -> normalised float ``(N, C, img_size, img_size)``.

    Resizing is bilinear with antialiasing (down-sampling keeps no aliasing artefacts); three
    channels repeat the grey channel, as a 3-channel (e.g. ImageNet) model expects.
    """
    out = []
    for part in images.split(chunk):
        x = part.unsqueeze(1).float().div_(255.0)
        if x.shape[-1] != img_size or x.shape[-2] != img_size:
            x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True,
                              align_corners=False).clamp_(0, 1)
        out.append(x.sub_(MEAN).div_(STD))
    x = torch.cat(out) if out else images.new_zeros((0, 1, img_size, img_size), dtype=torch.float32)
    return x.expand(-1, in_chans, -1, -1).contiguous() if in_chans != 1 else x


def load_splits(prepared_path: str | os.PathLike, *, train_size: int, val_size: int, test_size: int,
                img_size: int = 28, in_chans: int = 1, data_seed: int = 0,
                device: str | torch.device = "cpu") -> Splits:
    """The profile's train/validation/test tensors, already on ``device``.

    Subsets are class-stratified and drawn with ``data_seed``, so every technique and every
    training seed sees exactly the same images.
    """
    prepared = load_prepared(prepared_path)
    splits = {}
    for split, size in (("train", train_size), ("val", val_size), ("test", test_size)):
        labels = prepared[f"{split}_labels"]
        if size > len(labels):
            raise ValueError(f"{split}_size={size} but the {split} split has {len(labels)} images")
        index = stratified_subset(labels, size, data_seed)
        x = to_model_input(prepared[f"{split}_images"][index], img_size, in_chans)
        splits[split] = TensorData((x,), labels[index], CLASSES, split,
                                   {"img_size": img_size, "in_chans": in_chans, "mean": MEAN, "std": STD}).to(device)
    return Splits(**splits)


def _folder_transform(img_size: int, in_chans: int):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Grayscale(1) if in_chans == 1 else v2.RGB(),
        v2.ToImage(),
        v2.Resize((img_size, img_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([FOLDER_MEAN] * in_chans, [FOLDER_STD] * in_chans),
    ])


def _read_folder(root: str | os.PathLike, img_size: int, in_chans: int):
    """``(images, labels, classes, relative paths without suffix)`` of a ``root/<class>/<image>`` folder."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    try:
        dataset = ImageFolder(root, transform=_folder_transform(img_size, in_chans))
    except FileNotFoundError as err:  # no class folders, or class folders without images
        raise ValueError(f"image folder {root} holds no images: {err}") from None
    if len(dataset) == 0:
        raise ValueError(f"image folder {root} holds no images")
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    names = [str(Path(path).relative_to(root).with_suffix("")) for path, _ in dataset.samples]
    return torch.stack(xs), torch.tensor(ys), tuple(dataset.classes), names


def load_image_folder(root: str | os.PathLike, *, img_size: int, in_chans: int = 1,
                      device: str | torch.device = "cpu") -> TensorData:
    """A user's own ``root/<class>/<image>`` dataset, read whole into memory.

    Images are converted to grey (``in_chans=1``) or RGB (``in_chans=3``), resized to
    ``img_size`` and scaled to [-1, 1] (no dataset statistics are assumed).
    """
    x, y, classes, _ = _read_folder(root, img_size, in_chans)
    return TensorData((x,), y, classes, Path(root).name,
                      {"img_size": img_size, "in_chans": in_chans, "mean": FOLDER_MEAN, "std": FOLDER_STD}).to(device)


def load_paired_folders(root_a: str | os.PathLike, root_b: str | os.PathLike, *, img_size: int,
                        in_chans: int = 1, device: str | torch.device = "cpu") -> TensorData:
    """A user's own two-modality dataset: two folders laid out as ``<root>/<class>/<name>.<ext>``
    holding the same classes and the same names (the two modalities of one sample share a name;
    extensions may differ), read into one :class:`TensorData` with two inputs, ``(a, b)``.

    A sample present in one folder only, or filed under different classes, is an error that names
    it: silently dropping or mis-pairing samples would corrupt every result trained on them.
    """
    xa, ya, classes_a, names_a = _read_folder(root_a, img_size, in_chans)
    xb, yb, classes_b, names_b = _read_folder(root_b, img_size, in_chans)
    if classes_a != classes_b:
        raise ValueError(f"paired folders have different classes: {root_a} has {list(classes_a)}, "
                         f"{root_b} has {list(classes_b)}")
    if names_a != names_b:
        only_a = sorted(set(names_a) - set(names_b))
        only_b = sorted(set(names_b) - set(names_a))
        raise ValueError(f"paired folders do not hold the same samples: {len(only_a)} only in {root_a} "
                         f"(e.g. {only_a[:3]}), {len(only_b)} only in {root_b} (e.g. {only_b[:3]})")
    assert torch.equal(ya, yb)  # same names under the same class folders
    meta = {"img_size": img_size, "in_chans": in_chans, "mean": FOLDER_MEAN, "std": FOLDER_STD,
            "view": "pair", "sources": [str(root_a), str(root_b)]}
    return TensorData((xa, xb), ya, classes_a, f"{Path(root_a).name}+{Path(root_b).name}", meta).to(device)


# --------------------------------------------------------------------------- views
def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.shape[-2] // 2
    return x[..., :rows, :].contiguous(), x[..., rows:2 * rows, :].contiguous()


# What a model sees of each (N, C, H, W) image. "top"/"bottom" are the two halves of every
# garment: two complementary views, each incomplete on its own (sleeves and collars are in the
# top half, hems, soles and heels in the bottom one) and together exactly the image, so a
# two-modality model has a known upper bound (the single-image baseline).
VIEWS: dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, ...]]] = {
    "image": lambda x: (x,),
    "top": lambda x: _halves(x)[:1],
    "bottom": lambda x: _halves(x)[1:],
    "pair": _halves,  # two inputs: (top, bottom)
    "stacked": lambda x: (torch.cat(_halves(x), dim=1),),  # early fusion: the halves as channels
}


# The batch augmentations a stage's recipe can name (``augment:``), in the order they apply;
# implemented by :func:`resnet_review.techniques.augmentation.augmentation` on normalised training batches.
AUGMENTATIONS = ("randaugment", "mixup", "cutmix", "random_erasing")


def apply_view(data: TensorData, view: str) -> TensorData:
    """``data`` as seen through ``view`` (see :data:`VIEWS`); the images and labels are unchanged."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")
    if view == "image":
        return data
    if len(data.inputs) != 1:
        raise ValueError(f"view {view!r} splits one image input, but {data.name or 'the data'} has "
                         f"{len(data.inputs)} inputs already")
    return TensorData(VIEWS[view](data.inputs[0]), data.targets, data.classes, data.name, {**data.meta, "view": view})

