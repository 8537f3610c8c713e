"""``napari-clickseg segment``: segment one image file from clicks given on the command line.

Example::

    napari-clickseg segment cells.tif --click 120,80,+ --click 30,200,- -o cells_labels.tif
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .checks import BRS_MODES
from .files import replacing

__all__ = ["add_arguments", "file_channel_axis", "output_path", "parse_click", "read_image", "run"]

_POS = {"+": True, "pos": True, "positive": True, "1": True, "-": False, "neg": False, "negative": False, "0": False}


def parse_click(text: str) -> tuple[float, float, bool]:
    """Parse ``ROW,COL,+`` or ``ROW,COL,-`` into (row, col, positive).

    Raises:
        ValueError: malformed text.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or parts[2].lower() not in _POS:
        raise ValueError(f"bad click {text!r}: expected ROW,COL,+ or ROW,COL,- (e.g. 120,80,+)")
    try:
        row, col = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"bad click {text!r}: ROW and COL must be numbers") from None
    return row, col, _POS[parts[2].lower()]


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D image file as ``train`` and ``evaluate`` do (``data.io.read_array``).

    Returns (H, W) or (H, W, C): a TIFF stored channels first with few channels,
    such as (3, H, W), comes back channels last.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be decoded or is not a 2D image (message names it).
    """
    from .data.io import read_array

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return read_array(path, palette_colours=True)


def file_channel_axis(path: str | Path, image: np.ndarray, axis: int | None) -> int | None:
    """Map ``--channel-axis`` (an axis of the array stored in the file) onto ``read_image``'s array.

    ``read_image`` moves the channels of a channels-first TIFF last; the user's axis then
    moves with them, so ``--channel-axis 0`` on a (3, H, W) file still means its first axis.
    """
    if axis is None or image.ndim != 3:
        return axis
    if not -3 <= axis < 3:
        raise ValueError(f"--channel-axis {axis} is out of range for a 3D image")
    stored = image.shape
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shape = tuple(tif.series[0].shape)
        stored = tuple(n for n in shape if n != 1) if len(shape) > 3 else shape
    if stored == image.shape:
        return axis
    return (axis % 3 - 1) % 3  # stored (C, H, W) was read as (H, W, C)


def default_output(src: Path) -> Path:
    """IMAGE_labels.tif beside the image; for an image in a dataset's images/ folder (one
    with labels/ or masks/ beside it), in the dataset's folder: a file in images/ without
    ground truth would stop ``train`` and ``evaluate`` on that dataset."""
    folder = src.parent
    if folder.name.lower() == "images" and any((folder.parent / d).is_dir() for d in ("labels", "masks")):
        folder = folder.parent
    return folder / (src.stem + "_labels.tif")


def output_path(src: Path, output: str | None, overwrite: bool) -> Path:
    """The label TIFF to write: checked to be a new (or, with ``overwrite``, a replaceable) file.

    Raises:
        ValueError: a directory, not a .tif/.tiff name, an existing file without
            ``overwrite``, or the input image itself.
    """
    out = Path(output) if output else default_output(src)
    if out.is_dir():
        raise ValueError(f"output {out} is a directory; give a file name such as {out / (src.stem + '_labels.tif')}")
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(
            f"output {out} must be a .tif or .tiff file (labels are written as TIFF, keeping "
            "their exact values)"
        )
    if out.exists() and not overwrite:
        raise ValueError(f"output {out} exists; pass --overwrite to replace it")
    if out.exists() and src.exists() and out.samefile(src):  # also a link or another case of its name
        raise ValueError("output would overwrite the input image")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``segment`` subcommand."""
    parser.add_argument("image", help="input image (TIFF, PNG, JPEG, ...); 2D, gray, RGB or multichannel")
    parser.add_argument("--click", action="append", default=[], metavar="ROW,COL,+|-",
                        help="a click: ROW,COL,+ (object) or ROW,COL,- (background); repeat in order")
    parser.add_argument("-o", "--output", help="label TIFF (.tif/.tiff) to write (default: IMAGE_labels.tif beside the image, "
                        "or in the dataset's folder for an image in a dataset's images/ folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--model", default="default",
                        help="shipped model name, 'default', or a .safetensors weights file")
    parser.add_argument("--brs", choices=BRS_MODES, default="off", help="test-time refinement")
    parser.add_argument("--no-zoom-in", action="store_true", help="predict on the whole image at every click")
    parser.add_argument("--no-structural-integrity", action="store_true",
                        help="keep foreground not connected to a positive click")
    parser.add_argument("--graph-cut", action="store_true", help="min-cut post-processing")
    parser.add_argument("--threshold", type=float, default=0.5, help="foreground threshold (default 0.5)")
    parser.add_argument("--label", type=int, default=1, help="label value of the object (1..65535)")
    parser.add_argument("--channel-axis", type=int, default=None, help="channel axis of a 3D image as stored in the file (default: last, or first "
                        "for a TIFF stored channels first such as (3, H, W))")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")


def run(args: argparse.Namespace) -> int:
    """Segment, write the label TIFF and print a summary; returns the exit code."""
    import tifffile

    from .engine import Predictor

    if not args.click:
        raise ValueError("give at least one click, e.g. --click 120,80,+")
    clicks = [parse_click(c) for c in args.click]
    if not 1 <= args.label <= 65535:
        raise ValueError(f"--label must be in 1..65535, got {args.label}")
    if not 0.0 < args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
    src = Path(args.image)
    out = output_path(src, args.output, args.overwrite)
    image = read_image(src)
    channel_axis = file_channel_axis(src, image, args.channel_axis)
    if channel_axis is None and image.ndim == 3:
        channel_axis = -1  # read_image gives (H, W, C), however thin the image
    predictor = Predictor.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, zoom_in=not args.no_zoom_in
    )
    predictor.set_image(image, channel_axis=channel_axis)
    t0 = time.perf_counter()
    prob = predictor.predict(
        clicks, brs=args.brs, structural_integrity=not args.no_structural_integrity,
        graph_cut=args.graph_cut, threshold=args.threshold,
    )
    seconds = time.perf_counter() - t0
    dtype = np.uint8 if args.label <= 255 else np.uint16
    labels = np.where(prob >= args.threshold, args.label, 0).astype(dtype)
    with replacing(out) as tmp:  # an earlier file survives a full disk or a kill whole
        tifffile.imwrite(tmp, labels)
    info = predictor.info
    n_pos = sum(c[2] for c in clicks)
    print(f"image     {src} {tuple(image.shape)} {image.dtype}")
    print(f"model     {info['arch']} sha256={info['weights_sha256']} on {info['device']} ({info['dtype']})")
    print(f"clicks    {len(clicks)} ({n_pos} positive, {len(clicks) - n_pos} negative); brs={args.brs}, "
          f"zoom_in={info['zoom_in']}, structural_integrity={not args.no_structural_integrity}, "
          f"graph_cut={args.graph_cut}")
    print(f"object    {int((labels > 0).sum())} pixels ({100.0 * (labels > 0).mean():.2f} %), label {args.label}")
    print(f"time      {seconds:.2f} s for {len(clicks)} click(s)")
    print(f"wrote     {out} ({np.dtype(dtype).name})")
    return 0
