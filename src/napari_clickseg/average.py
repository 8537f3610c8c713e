"""``napari-clickseg average``: the mean of the weights of several fine-tunes of one model.

A "model soup" (Wortsman et al. 2022): fine-tunes of the same start, with other seeds or
learning rates, averaged into one file. The files must hold the same model
(architecture, kwargs, normalisation, engine settings); the output's metadata lists
every member with its sha256 and training record (``weights.average_weights``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``napari-clickseg average``."""
    parser.add_argument("files", nargs="+", type=Path, help="weights files (.safetensors) of one model")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the averaged weights file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _identity(path: Path) -> tuple[int, int] | Path:
    """What tells two names of one file apart from two files (links and letter case too)."""
    try:
        st = path.stat()
    except OSError:
        return path.resolve()
    return (st.st_dev, st.st_ino)


def run(args: argparse.Namespace) -> int:
    """Write the mean; an existing ``--out`` is kept unless ``--overwrite``."""
    from .weights import average_weights

    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give the weights file to write")
    if len({_identity(f) for f in args.files}) < len(args.files):
        raise ValueError("a weights file is given twice: each run counts once in the mean")
    if args.out.exists() and not args.overwrite:
        raise ValueError(f"{args.out} exists; pass --overwrite to replace it")
    if _identity(args.out) in {_identity(f) for f in args.files}:
        raise ValueError(f"--out {args.out} is one of the inputs")
    sha = average_weights(args.files, args.out)
    print(f"{args.out}: mean of {len(args.files)} files, sha256 {sha}")
    return 0
