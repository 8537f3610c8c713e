"""Command line: ``napari-clickseg train | evaluate | segment | demo | bench | average``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``napari-clickseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import warnings

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("napari_clickseg.training.command", "fine-tune or train a model on a folder of images + masks"),
    "evaluate": ("napari_clickseg.evaluation.command", "robot-user evaluation (NoC, mIoU, AuC) on a dataset"),
    "segment": ("napari_clickseg.segment", "segment an image file from clicks given on the command line"),
    "demo": ("napari_clickseg.demo", "open napari with the plugin and a sample image (headless: write a demo result)"),
    "bench": ("napari_clickseg.bench", "per-click latency, memory and training-speed benchmark"),
    "average": ("napari_clickseg.average", "average the weights of several fine-tunes of one model (a model soup)"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-clickseg`` console script.

    A ``ValueError`` or ``OSError`` from a command (bad input, missing or unwritable
    files) becomes a one-line message and exit code 2; any other exception is a bug
    and keeps its traceback. Ctrl-C exits with code 130. The package's own warnings
    (e.g. a TIFF's pages read as channels) are printed as one line each.
    """
    argv = sys.argv[1:] if argv is None else argv
    stdout, stderr = sys.stdout, sys.stderr
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_for_ours(warnings.showwarning)
        sys.stdout = _QuietOnceClosed(stdout)
        if argv[:1] != ["train"]:  # a run whose reader has gone (the dock's fine-tune) stops there
            sys.stderr = _QuietOnceClosed(stderr)
        try:
            return _main(argv)
        except KeyboardInterrupt:  # Ctrl-C while loading or before a command's own handling
            print("napari-clickseg: interrupted", file=sys.stderr)
            return 130
        finally:
            sys.stdout, sys.stderr = stdout, stderr


class _QuietOnceClosed(io.TextIOBase):
    """Standard output (or error) that goes quiet when its reader has gone (``evaluate ... 2>&1
    | head``), so that the command still writes its files instead of failing on a broken pipe.
    ``train`` keeps a plain standard error: the dock's fine-tune child stops when napari goes."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        # the descriptor, not just this object: the interpreter flushes the stream at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        self._stream = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    def fileno(self) -> int:
        return self._stream.fileno()


def _one_line_for_ours(show_any):  # noqa: ANN001, ANN202
    """A ``warnings.showwarning`` printing the package's own warnings (about the user's
    input) as one line, and passing any other warning to ``show_any``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if category.__module__.startswith("napari_clickseg."):
            print(f"napari-clickseg: warning: {message}", file=sys.stderr if file is None else file)
        else:
            show_any(message, category, filename, lineno, file, line)

    return show


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-clickseg", description=__doc__.splitlines()[0].replace("``", ""))
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
