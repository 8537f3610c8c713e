"""Average the weights of several fine-tunes of one model into one file (a "model soup").

Usage::

    python scripts/average_weights.py RUN_A/last.safetensors RUN_B/last.safetensors ... --out soup.safetensors

The files must hold the same model (architecture, kwargs, normalisation, engine
settings). The output's metadata lists every member with its sha256 and training
record, so ``scripts/ship_weights.py`` can describe it on a model card. An
existing output file is kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_clickseg.weights import WeightsError, average_weights


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="weights files (.safetensors) of one model")
    ap.add_argument("--out", type=Path, required=True, help="the averaged weights file to write")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        ap.error(f"{args.out} exists; pass --overwrite to replace it")
    if args.out.resolve() in {f.resolve() for f in args.files}:
        ap.error(f"--out {args.out} is one of the inputs")
    try:
        sha = average_weights(args.files, args.out)
    except WeightsError as e:
        ap.error(str(e))
    print(f"{args.out}: mean of {len(args.files)} files, sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
