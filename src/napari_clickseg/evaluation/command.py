"""``napari-clickseg evaluate``: robot-user evaluation (docs/PROTOCOL.md) of models on datasets.

Example::

    napari-clickseg evaluate --model default --model random_walker \\
        --data shared/data/grabcut --data shared/data/dsb2018/val --max-objects 300 \\
        --brs off --brs fbrs --out runs/eval

Every model x BRS mode x dataset combination is one run. Writes
``evaluation.json`` (all numbers, per-object curves and clicks, dataset path
and split, weights file and sha256, settings), ``evaluation.md`` and
``miou.png`` to ``--out``, and prints the table. Earlier results in ``--out`` are
never replaced without ``--overwrite``; ``--out`` is checked before evaluating.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .runner import BRS_MODES


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the ``evaluate`` subcommand."""
    p.add_argument(
        "--model", action="append", metavar="NAME_OR_PATH",
        help="shipped model name, 'default', a .safetensors weights file, or 'random_walker' "
        "(the classical baseline); repeat to compare (default: default)",
    )
    p.add_argument(
        "--data", action="append", required=True, metavar="DIR",
        help="dataset folder with images/ and labels/ (instance maps) or masks/ (binary, 128 = "
        "ignore); repeatable",
    )
    p.add_argument("--out", default="runs/evaluate", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier evaluation in --out")
    p.add_argument(
        "--brs", action="append", choices=BRS_MODES,
        help="test-time refinement; repeat to compare modes (default: off)",
    )
    p.add_argument("--structural-integrity", action=argparse.BooleanOptionalAction, default=False,
                   help="keep only foreground 8-connected to a positive click (default: off, as in "
                   "the papers' protocol; the napari widget has it on)")
    p.add_argument("--zoom-in", action=argparse.BooleanOptionalAction, default=None,
                   help="zoom in on the object (default: the predictor's own default)")
    p.add_argument("--click-radius", type=float, default=None, metavar="PX",
                   help="a click the network contradicts gets its label back within PX view pixels; "
                   "0 = the network's output as it is (default: the predictor's, 5)")
    p.add_argument("--graph-cut", action=argparse.BooleanOptionalAction, default=False,
                   help="graph-cut post-processing (default: off)")
    p.add_argument("--max-clicks", type=int, default=20, help="clicks per object (default: 20)")
    p.add_argument("--max-objects", type=int, default=None, metavar="N",
                   help="evaluate a fixed random sample of N objects per dataset (seeded)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for --max-objects (default: 0)")
    p.add_argument(
        "--stop-iou", type=float, default=None, metavar="IOU",
        help="stop an object once its IoU reaches IOU (0.9 to 1) and repeat that IoU for its remaining "
        "clicks (saves time; NoC stays exact, mIoU after the stop is an assumption and >95%%/>99%% "
        "are n/a). Default: never stop early",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="inference precision (default auto: bfloat16 where the device computes it "
                   "natively; the model cards were scored in float32)")
    p.add_argument("--no-objects", action="store_true",
                   help="leave per-object curves and clicks out of the JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")


def check_out(out: str | Path, overwrite: bool = False, files: Sequence[str] | None = None) -> Path:
    """Make sure ``out`` can take the reports, before anything is evaluated; creates it.

    Args:
        out: the output folder.
        overwrite: replace earlier reports.
        files: the report names (default: ``evaluate``'s).

    Raises:
        ValueError: ``out`` is a file, or holds earlier results and ``overwrite`` is False.
        OSError: ``out`` cannot be created or written to.
    """
    from .report import report_paths

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    paths = report_paths(out).values() if files is None else [out / f for f in files]
    found = [p for p in paths if p.exists()]
    if found and not overwrite:
        names = ", ".join(p.name for p in found)
        raise ValueError(
            f"--out {out} already holds results ({names}); pass --overwrite to replace them "
            "or choose another --out"
        )
    for p in found:
        if p.is_dir():
            raise ValueError(f"cannot write {p}: it is a folder")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):  # raises PermissionError if out is read-only
        pass
    return out


def run(args: argparse.Namespace) -> int:
    """Run every model x BRS mode x dataset and write the reports."""
    from .report import markdown_table, write_reports
    from .runner import load_eval_set, load_predictor

    models = list(dict.fromkeys(args.model or ["default"]))
    modes = list(dict.fromkeys(args.brs or ["off"]))
    if args.max_clicks < 1:
        raise ValueError("--max-clicks must be >= 1")
    if args.stop_iou is not None and not 0.9 <= args.stop_iou <= 1.0:
        raise ValueError(
            f"--stop-iou must be in [0.9, 1]: NoC@90 and NoF@90 need objects clicked until 0.90 "
            f"(got {args.stop_iou})"
        )
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    sets = [
        load_eval_set(d, max_objects=args.max_objects, seed=args.seed, progress=progress)
        for d in args.data
    ]
    # every model loads (or fails) before the first is evaluated
    predictors = {name: load_predictor(name, device=args.device, zoom_in=args.zoom_in, dtype=args.dtype) for name in models}
    with removed_if_left_empty(args.out):
        out = check_out(args.out, args.overwrite)  # after --data and the models are known good
        results: list[dict] = []
        try:
            _evaluate_all(args, predictors, modes, sets, progress, results)
        except (Exception, KeyboardInterrupt) as e:
            if not results:
                raise
            # the runs that finished are kept: written, then the failure is reported
            print(markdown_table(results), flush=True)
            reason = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            try:
                write_reports(results, out, incomplete=f"stopped after {len(results)} runs: {reason}")
                kept = f"the {len(results)} runs that finished are in {out}"
            except OSError as w:  # the run's own failure is the one to report
                kept = (f"the {len(results)} runs that finished could not be written into {out} "
                        f"({w.strerror or w}): the table above is their result")
            if isinstance(e, (ValueError, OSError)):  # a user error: one line
                raise ValueError(f"{e}; {kept}") from None
            print(kept, file=sys.stderr)
            raise
        print(markdown_table(results), flush=True)  # first: a failed write leaves the table on screen
        try:
            paths = write_reports(results, out)
        except OSError as e:
            raise OSError(f"cannot write the reports into {out}: {e.strerror or e} (the table above is the result)") from None
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


@contextlib.contextmanager
def removed_if_left_empty(out: str | os.PathLike | None) -> Iterator[None]:
    """If the block fails, remove the folders of ``out`` that it created and left empty.

    The folders missing when the block starts (``out`` and any missing parents) are
    the ones the block may create; the deepest goes first.
    """
    missing: list[Path] = []
    folder = Path(out).absolute() if out is not None else None
    while folder is not None and not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException:
        for folder in missing:
            if not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
        raise


def _evaluate_all(args: argparse.Namespace, predictors: dict, modes: list[str], sets: list,
                  progress: Callable[[str], None], results: list[dict]) -> None:
    """Every model x BRS mode x dataset, in that order, appended to ``results`` as each finishes."""
    from .runner import evaluate

    for name, predictor in predictors.items():
        for mode in modes:
            if name == "random_walker" and mode != modes[0]:
                continue  # BRS does not apply to the baseline: one run stands for every mode
            for s in sets:
                progress(f"evaluating {name} (brs={mode}) on {s.name}: {len(s.items)} objects")
                r = evaluate(
                    predictor,
                    s,
                    max_clicks=args.max_clicks,
                    brs=mode,
                    structural_integrity=args.structural_integrity,
                    zoom_in=args.zoom_in,
                    click_radius=args.click_radius,
                    graph_cut=args.graph_cut,
                    stop_iou=args.stop_iou,
                    max_objects=args.max_objects,
                    seed=args.seed,
                    keep_objects=not args.no_objects,
                    progress=progress,
                )
                r["model"]["requested"] = str(name)
                if name == "random_walker":
                    r["settings"]["brs"] = "off"
                results.append(r)
