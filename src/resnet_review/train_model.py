"""Train one model of a profile from the shell: one process, or data-parallel under ``torchrun``
(see :mod:`resnet_review.distributed`). Rank 0 writes ``model.pt``, ``history.json`` and the
resume checkpoint under ``--out``; a re-run resumes from it.

    python -m resnet_review.train_model --profile smoke --model resnet18 --out models/ddp
    torchrun --nproc_per_node 2 -m resnet_review.train_model --profile smoke --model resnet18 --out models/ddp
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch.distributed as dist

from .config import Paths, load_params
from .data import load_splits
from .distributed import World
from .engine import Accel, fit, seed_everything
from .models import build_model
from .storage import atomic_save


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train one model of a profile; data-parallel under torchrun.")
    parser.add_argument("--profile", default=None, help="params.yaml profile (default: its switch)")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments of build_model")
    parser.add_argument("--epochs", type=int, default=None, help="default: the profile's")
    parser.add_argument("--seed", type=int, default=None, help="default: the profile's first seed")
    parser.add_argument("--device", default=None, help="default: the profile's (auto)")
    parser.add_argument("--out", required=True, help="folder for model.pt, history.json and the resume checkpoint")
    parser.add_argument("--lr", type=float, default=None, help="default: the params' train.lr (scaled per profile)")
    args = parser.parse_args(argv)

    world = World.from_env()
    params = load_params(profile=args.profile)
    budget, paths = params.budget, Paths()
    seed = budget.seeds[0] if args.seed is None else args.seed
    accel = Accel.for_device(args.device or budget.device, compile=budget.compile)
    splits = load_splits(paths.prepared, train_size=budget.train_size, val_size=budget.val_size,
                         test_size=budget.test_size, img_size=budget.img_size, in_chans=budget.in_chans,
                         data_seed=budget.data_seed)
    seed_everything(seed)
    model = build_model(args.model, in_chans=budget.in_chans, **json.loads(args.model_kwargs))
    out = Path(args.out)
    recipe = budget.scaled_recipe(params.train, budget.batch_size)
    if args.lr is not None:
        recipe = recipe.model_copy(update={"lr": args.lr})
    result = fit(model, splits.train, splits.val, recipe=recipe,
                 epochs=args.epochs or budget.epochs, batch_size=budget.batch_size, seed=seed, accel=accel,
                 eval_batch_size=budget.eval_batch_size, checkpoint_path=out / "resume.pt", checkpoint_last=True,
                 desc=args.model)
    if world is None or world.leader:
        out.mkdir(parents=True, exist_ok=True)
        atomic_save(model.state_dict(), out / "model.pt")
        (out / "history.json").write_text(json.dumps(result.history, indent=1))
        print(f"[{args.model}] {result.epochs_completed} epochs on {world.size if world else 1} process(es); "
              f"val_acc={result.final.get('val_acc', float('nan')):.4f}; wrote {out}", file=sys.stderr)
    if world is not None:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
