"""Reading images and masks from disk (tif via tifffile, everything else via Pillow)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "MIN_OBJECT_PX", "DataError", "PagesReadAsChannels", "available_cpus", "read_array"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: objects with fewer pixels are not training samples
MIN_OBJECT_PX = 30


def available_cpus() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class DataError(ValueError):
    """A dataset folder or file is missing, unreadable or inconsistent (message names the file)."""


class PagesReadAsChannels(UserWarning):
    """A TIFF's many pages carry no axis metadata, so they are read as channels."""


_STACK_AXES = {"Z": "z-stack", "T": "time series"}
# more unlabelled pages than this are more likely planes of a stack than colour channels
_MAX_QUIET_PAGES = 4
# pages at least this wide on both sides could be planes of a stack (narrower: rows of channels)
_MIN_PAGE_SIDE = 16


def _refuse_stack(path: Path, axes: str, shape: tuple[int, ...]) -> None:
    """Raise DataError when a TIFF's axis metadata marks a Z or T axis longer than 1."""
    kinds = [_STACK_AXES[a] for a, n in zip(axes.upper(), shape) if a in _STACK_AXES and n > 1]
    if kinds:
        raise DataError(
            f"{path}: a {' and '.join(kinds)} (axes {axes}, shape {tuple(shape)}), not a 2D image; "
            "napari-clickseg reads one 2D plane per file: save each plane as its own file "
            "(for the napari dock, open the stack in napari, where stacks are supported)"
        )


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    """A TIFF's first series and its axes, refusing z-stacks and time series (per its axis metadata)."""
    import tifffile

    with tifffile.TiffFile(str(path)) as tf:
        series = tf.series[0]
        _refuse_stack(path, series.axes, series.shape)
        return np.asarray(tf.asarray()), series.axes


def _warn_pages_read_as_channels(path: Path, n: int) -> None:
    warnings.warn(
        f"{path}: its {n} pages carry no axis metadata and are read as {n} "
        "channels of one 2D image; if they are z-planes or time points, save each plane as "
        "its own file, or write the axes (e.g. tifffile.imwrite(path, stack, imagej=True, "
        "metadata={'axes': 'ZYX'})) to have the stack refused",
        PagesReadAsChannels,
        stacklevel=3,  # the caller of read_array
    )


def _warn_pages_read_as_rows(path: Path, shape: tuple[int, ...]) -> None:
    n, h, c = shape
    warnings.warn(
        f"{path}: its {n} pages of {h}x{c} carry no axis metadata and are read as one {n}x{h} "
        f"image with {c} channels (its pages as rows); if they are {n} planes of a stack, "
        "save each plane as its own file, or write the axes (e.g. tifffile.imwrite(path, "
        "stack, imagej=True, metadata={'axes': 'ZYX'})) to have the stack refused; if it is "
        "one image, write its axes (tifffile.imwrite(path, image, metadata={'axes': 'YXC'})) "
        "to read it without this warning",
        PagesReadAsChannels,
        stacklevel=3,  # the caller of read_array
    )


def _refuse_deep_colour_png(path: Path) -> None:
    """Raise for a 16-bit colour PNG: Pillow would keep only its high bytes, silently."""
    with open(path, "rb") as f:
        head = f.read(26)
    # signature, IHDR length and type, width, height, then bit depth and colour type
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) == 26:
        depth, colour = head[24], head[25]
        if depth == 16 and colour in (2, 4, 6):  # RGB, gray + alpha, RGBA
            raise DataError(
                f"{path}: a 16-bit colour PNG cannot be read without losing its low 8 bits; "
                "save it as TIFF (e.g. tifffile.imwrite) or as 8-bit"
            )


def read_array(path: str | os.PathLike, *, palette_colours: bool = False) -> np.ndarray:
    """Read a 2D image file as an array: (H, W) or (H, W, C).

    TIFF files are read with tifffile (any dtype, channels last or, for small
    leading axes such as (C, H, W), moved last; an unlabelled leading axis counts
    as channels, with a PagesReadAsChannels warning when it has more than 4 pages,
    and more than 64 such pages are refused as a stack when their planes are wider
    than 64; unlabelled pages at least as many as a plane is wide are read as rows of
    an (H, W, C) image, with that warning when C > 4 and each page is at least 16x16 and
    no more than 4 times as long as wide; a file whose axes end in C, such as YXC, stays
    as it is);
    other formats with Pillow (palette images become their indices, or with
    ``palette_colours`` the RGB colours a viewer shows, as images need; a gray or palette
    image's alpha is dropped, 16-bit gray
    PNGs stay uint16; 16-bit colour PNGs are refused, as Pillow reads only their
    high bytes). A single channel comes back as (H, W).

    Raises:
        DataError: the file is missing or cannot be decoded, or is not 2D (including
            TIFFs whose metadata, e.g. ImageJ or OME, marks a Z or T axis).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        axes = ""
        if path.suffix.lower() in (".tif", ".tiff"):
            arr, axes = _read_tiff(path)
        else:
            from PIL import Image

            _refuse_deep_colour_png(path)
            with Image.open(path) as im:
                if im.mode == "P":
                    # palette PNGs: an image's colours, or a label map's indices (VOC-style)
                    arr = np.asarray(im.convert("RGB")) if palette_colours else np.asarray(im)
                elif im.mode in ("LA", "La", "PA"):
                    # gray or palette + alpha: the alpha is transparency, not image data
                    # (as for 8-bit RGBA, whose alpha prepare_image drops)
                    arr = np.asarray(im.getchannel(0))
                elif im.mode in ("I;16", "I;16B", "I;16L"):
                    arr = np.asarray(im).astype(np.uint16)
                elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    arr = np.asarray(im.convert("RGB"))
                else:
                    arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # decoders raise many types
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if arr.size == 0:
        raise DataError(f"cannot read {path}: no image data (corrupt or empty file?)")
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and axes[:1] in ("I", "Q") and arr.shape[0] > 64 and arr.shape[-1] > 64:
        raise DataError(
            f"{path}: {arr.shape[0]} pages of {arr.shape[1]}x{arr.shape[2]} without axis metadata, "
            "too many to be channels: a stack, not a 2D image; save each plane as its own file"
        )
    channels_last = len(axes) == 3 and axes[-1] in ("C", "S")  # e.g. written with axes YXC
    if (
        arr.ndim == 3 and not channels_last
        and arr.shape[0] < arr.shape[-1] and arr.shape[0] <= 64 and arr.shape[-1] > 4
    ):
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) -> (H, W, C)
        if axes[:1] in ("I", "Q") and arr.shape[-1] > _MAX_QUIET_PAGES:  # pages of unknown kind
            _warn_pages_read_as_channels(path, arr.shape[-1])
    elif (
        arr.ndim == 3 and axes[:1] in ("I", "Q") and arr.shape[-1] > _MAX_QUIET_PAGES
        and min(arr.shape[1:]) >= _MIN_PAGE_SIDE and max(arr.shape[1:]) <= 4 * min(arr.shape[1:])
    ):  # (H, W, C) saved as H pages of W x C, or a stack of as many pages as a plane is wide
        # (pages far from square, such as 512x16, are rows of a multichannel image)
        _warn_pages_read_as_rows(path, arr.shape)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]  # one channel: a gray image or a label map
    if arr.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2D image, got an array of shape {arr.shape}")
    return arr
