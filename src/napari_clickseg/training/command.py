"""``napari-clickseg train``: fine-tune or train a model on folders of images and masks.

Example::

    napari-clickseg train --model early --data my_cells/ --val my_cells_val/ \\
        --minutes 30 --out runs/cells

Each ``--data`` / ``--val`` folder holds ``images/`` and either ``labels/``
(instance maps) or ``masks/`` (binary, 255 = object, 128 = ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .config import CLICK_SCHEDULES, TrainConfig

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the ``train`` options."""
    p.description = __doc__.split("\n\n")[0].replace("``", "")
    p.add_argument("--model", help="architecture name, or default: the shipped default model (default: default)")
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="training folder (images/ + labels/ or masks/); repeat for several")
    p.add_argument("--val", action="append", default=[], metavar="DIR",
                   help="validation folder for choosing the best weights; repeat for several")
    p.add_argument("--init",
                   help="starting weights: default (shipped weights for the model), imagenet, scratch, "
                        "or a .safetensors file (default: default)")
    p.add_argument("--minutes", type=float, help="training time budget in minutes")
    p.add_argument("--iterations", type=int, help="number of iterations (batches)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder for checkpoints, logs and weights")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out with its saved settings "
                        "(--minutes / --iterations extend it; --device, --threads and --workers are this machine's)")
    p.add_argument("--batch-size", type=int, help="samples per iteration and process (default: 8)")
    p.add_argument("--crop-size", type=int, help="training crop side, a multiple of 32 (default: 320)")
    p.add_argument("--lr", type=float, help="learning rate (default: 5e-4 from ImageNet, 1e-4 fine-tuning)")
    p.add_argument("--loss", help="loss name (default: the one the --init weights were trained with, else the model's paper's)")
    p.add_argument("--click-schedule", choices=CLICK_SCHEDULES,
                   help="click simulation (default: click_by_click for hires, else iterative)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast")
    p.add_argument("--threads", type=int, help="torch threads per process (default: all cores)")
    p.add_argument("--workers", type=int, help="data-loading worker processes (default: 0)")
    p.add_argument("--val-every", type=int, help="validate every N iterations (default: 100)")
    p.add_argument("--val-objects", type=int, help="validation objects, a fixed seeded subset (default: 64)")
    p.add_argument("--config", metavar="JSON", help="a config.json to start from (command-line options win)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field, value as JSON (e.g. --set max_iter_clicks=2)")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields set by named command-line options (``None``: not given)."""
    given = {
        "model": args.model, "train_dirs": args.data or None, "val_dirs": args.val or None,
        "init": args.init, "minutes": args.minutes, "iterations": args.iterations, "out": args.out,
        "batch_size": args.batch_size, "crop_size": args.crop_size, "lr": args.lr, "loss": args.loss,
        "click_schedule": args.click_schedule, "seed": args.seed, "device": args.device,
        "bf16": args.bf16, "threads": args.threads, "num_workers": args.workers,
        "val_every": args.val_every, "val_objects": args.val_objects,
    }
    return {k: v for k, v in given.items() if v is not None}


def _set_items(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set KEY=VALUE`` pairs (values parsed as JSON, else kept as strings)."""
    items: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        try:
            items[key] = json.loads(value)
        except json.JSONDecodeError:
            items[key] = value
    return items


def explicit_fields(args: argparse.Namespace) -> set[str]:
    """Config fields the user set: named options, ``--set`` keys and the keys of a ``--config`` file."""
    fields = set(_given(args)) | set(_set_items(args))
    if args.config:
        fields |= set(json.loads(Path(args.config).read_text()))
    return fields


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build a ``TrainConfig`` from parsed arguments."""
    base = TrainConfig.load(args.config).to_dict() if args.config else TrainConfig().to_dict()
    base.update(_given(args))
    base.update(_set_items(args))
    return TrainConfig.from_dict(base)


def run(args: argparse.Namespace) -> int:
    """Run ``train`` from the command line; returns the exit code."""
    from .trainer import check_resume_options, train

    cfg = config_from_args(args)
    if args.resume:
        check_resume_options(cfg, explicit_fields(args))
    try:
        train(cfg, resume=args.resume)
    except KeyboardInterrupt:
        if (Path(cfg.out) / "config.json").is_file():
            print("stopped; continue with the same command and --resume", file=sys.stderr)
        else:
            print("stopped before the run began: nothing was written", file=sys.stderr)
        return 130
    return 0
