"""Command line: ``napari-clickseg train | evaluate | segment | demo | bench``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``napari-clickseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("napari_clickseg.training.command", "fine-tune or train a model on a folder of images + masks"),
    "evaluate": ("napari_clickseg.evaluation.command", "robot-user evaluation (NoC, mIoU, AuC) on a dataset"),
    "segment": ("napari_clickseg.segment", "segment an image file from clicks given on the command line"),
    "demo": ("napari_clickseg.demo", "open napari with the plugin and a sample image (headless: write a demo result)"),
    "bench": ("napari_clickseg.bench", "per-click latency, memory and training-speed benchmark"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-clickseg`` console script.

    A ``ValueError`` or ``OSError`` from a command (bad input, missing or unwritable
    files) becomes a one-line message and exit code 2; any other exception is a bug
    and keeps its traceback. Ctrl-C exits with code 130.
    """
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # Ctrl-C while loading or before a command's own handling
        print("napari-clickseg: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-clickseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError) as e:  # user errors and file system errors; bugs keep their traceback
        print(f"napari-clickseg {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
