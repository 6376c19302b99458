"""``python -m resnet_review.prepare``: verify the raw Fashion-MNIST files and write the prepared
split (the ``prepare`` stage of dvc.yaml), with the sizes of ``params.yaml: prepare``."""

from __future__ import annotations

import argparse

from .config import ParamsError, Paths, load_params
from .data import DataIntegrityError, prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet_review.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw-dir", help="folder of the four raw .gz files (default: data/raw)")
    parser.add_argument("--out", help="prepared tensor file (default: data/prepared/fashion_mnist.pt)")
    args = parser.parse_args(argv)
    paths = Paths()
    try:
        params = load_params(paths.params).prepare
        sizes = prepare(args.raw_dir or paths.raw, args.out or paths.prepared, params.val_size, params.split_seed)
    except (ParamsError, DataIntegrityError) as err:
        parser.exit(1, f"error: {err}\n")
    print(f"prepared {args.out or paths.prepared}: {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
