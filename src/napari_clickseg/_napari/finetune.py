"""Fine-tuning from the dock, without Qt: export the committed objects as a training folder,
run ``napari-clickseg train`` in a child process, and write a model card for the result.

The training runs in its own process so annotation never waits on it (no shared GIL, no
shared torch threads); cancelling sends SIGTERM, on which the trainer writes a checkpoint
and stops. A run still going when Python exits is cancelled the same way (and waited for, so
its checkpoint is written), never left behind as an orphan. The weights it writes (``best.safetensors`` with validation, else
``last.safetensors``) are self-describing and load like any weights file.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from ..data.io import MIN_OBJECT_PX, available_cpus
from ..files import replacing
from .planes import ImageGeometry, Plane, plane_of_box
from .session import AnnotationSession

__all__ = [
    "AnnotatedImage", "Exported", "FineTuneSpec", "TrainingProcess", "export_committed", "export_for_run",
    "iteration_of", "result_weights", "stop_live", "training_starts", "write_card",
]

_ITER = re.compile(r"^(?:iteration (\d+) \||interrupted at iteration (\d+):)")
_TRAINING = re.compile(r"^training \S+ \(")  # the trainer's line before its first step
_LIVE: set[TrainingProcess] = set()  # strong: a run the dock let go of is still waited for
EXIT_WAIT_S = 60.0  # how long Python's exit waits for a cancelled trainer's checkpoint


def iteration_of(line: str) -> int | None:
    """The iteration a trainer's progress or interruption line reports (None for other lines)."""
    m = _ITER.match(line)
    return None if m is None else int(m.group(1) or m.group(2))


def training_starts(line: str) -> bool:
    """The trainer's line saying its steps begin (the data is read, the model built)."""
    return _TRAINING.match(line) is not None


def _trainable(labels: np.ndarray) -> set[int]:
    """The ids in a label plane with enough pixels for the trainer to use them."""
    ids, counts = np.unique(labels, return_counts=True)
    return {int(i) for i, n in zip(ids, counts, strict=True) if i > 0 and n >= MIN_OBJECT_PX}


@dataclass(frozen=True)
class AnnotatedImage:
    """One image's committed objects: its layer name, session, geometry and pixel data."""

    name: str
    session: AnnotationSession
    geometry: ImageGeometry
    data: Any


class Exported(NamedTuple):
    """What an export wrote: planes, objects the trainer uses, objects left out as they span
    several planes of a stack with no record of the one they were drawn on, objects left out
    as smaller than ``MIN_OBJECT_PX``, and the names of the images with planes written."""

    planes: int
    objects: int
    spanning: int = 0
    small: int = 0
    images: tuple[str, ...] = ()


def _boxes(labels: np.ndarray, ids: list[int]) -> dict[int, tuple[slice, ...]]:
    """Bounding boxes of the sorted positive ``ids`` present in ``labels``."""
    if not ids:
        return {}
    if ids[-1] <= 1 << 24:  # find_objects lists every id up to the largest
        boxes = ndimage.find_objects(labels, max_label=ids[-1])
        return {i: boxes[i - 1] for i in ids}
    values, dense = np.unique(labels, return_inverse=True)  # huge ids: numbered 1..n first
    boxes = ndimage.find_objects(dense.reshape(labels.shape) + 1)
    wanted = set(ids)
    return {int(v): box for v, box in zip(values, boxes, strict=True) if int(v) in wanted}


def _trainer_ids(labels: np.ndarray) -> np.ndarray:
    """``labels`` as the trainer reads them: ids past int64 renumbered 1..n (ids kept otherwise)."""
    if labels.dtype != np.uint64 or int(labels.max(initial=0)) <= np.iinfo(np.int64).max:
        return labels
    values, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape) + int(values[0] != 0)  # 0 stays the background
    return dense.astype(np.uint32)


def _small(labels: np.ndarray, ids: Sequence[int] | None = None) -> int:
    """How many of ``ids`` (None: every positive id) have pixels, but too few to train on."""
    values, counts = np.unique(labels, return_counts=True)
    wanted = None if ids is None else set(ids)
    return sum(
        1 for v, n in zip(values, counts, strict=True)
        if v > 0 and n < MIN_OBJECT_PX and (wanted is None or int(v) in wanted)
    )


def _planes_of(image: AnnotatedImage) -> tuple[dict[Plane, list[int] | None], int, int]:
    """The planes to export with their objects (None: all on the plane), and the numbers
    of objects left out as they span planes or are too small."""
    session, geometry = image.session, image.geometry
    if len(geometry.spatial_shape) == 2:
        planes = {Plane.full_2d(): None} if _trainable(session.labels) else {}
        return planes, 0, _small(session.labels)
    objects_on: dict[Plane, list[int]] = {}
    for oid, record in session.records.items():
        if record.plane is not None:
            plane = Plane(tuple(sorted(record.plane.displayed)), record.plane.index)
            objects_on.setdefault(plane, []).append(int(oid))
    spanning = small = 0
    placed = {oid for ids in objects_on.values() for oid in ids}
    labels = session.labels
    loose = sorted({int(i) for i in np.unique(labels) if i > 0} - placed)
    for oid, box in _boxes(labels, loose).items():  # painted or loaded without a record
        plane = plane_of_box(box)
        if plane is None:
            if np.count_nonzero(labels[box] == oid) >= MIN_OBJECT_PX:
                spanning += 1
            else:
                small += 1
        else:
            objects_on.setdefault(plane, []).append(oid)
    kept: dict[Plane, list[int] | None] = {}
    for plane, ids in objects_on.items():  # objects erased by hand, wholly or nearly
        view = plane.view(labels)
        trainable = _trainable(view)
        small += _small(view, ids)
        if ours := [oid for oid in ids if oid in trainable]:
            kept[plane] = ours
    return kept, spanning, small


def export_committed(images: Sequence[AnnotatedImage], out_dir: str | os.PathLike) -> Exported:
    """Write every plane holding a committed object as ``images/`` + ``labels/`` tifs.

    Images keep their raw dtype and channels. On a 2D image every object is on its one
    plane, painted ones included. On a stack, a plane's labels hold the objects committed
    on it (a slice shown transposed is the same plane) and those painted or loaded without
    a record that lie in it; objects committed on other planes that cross it are left out,
    as only their own plane says where they end, and so are objects spanning planes with
    no record of one. Objects erased by hand down to fewer pixels than the trainer uses are
    left out (a plane left with none is not written). Images are written with their axes,
    so they read back as they are.

    Raises:
        ValueError: if no committed object has the pixels the trainer needs.
        OSError: ``out_dir`` exists (a folder is never written into twice).
    """
    import tifffile

    todo, spanning, small = [], 0, 0
    for image in images:
        planes, n_spanning, n_small = _planes_of(image)
        todo.append((image, planes))
        spanning, small = spanning + n_spanning, small + n_small
    if not any(planes for _, planes in todo):
        more = f" ({spanning} span several planes of a stack: commit them on one)" if spanning else ""
        raise ValueError(
            f"no committed objects of at least {MIN_OBJECT_PX} pixels to train on{more}: "
            "commit some objects first"
        )
    out = Path(out_dir)
    out.mkdir(parents=True)
    try:
        (out / "images").mkdir()
        (out / "labels").mkdir()
        n_planes = n_objects = 0
        for k, (image, objects_on) in enumerate(todo):
            for i, plane in enumerate(sorted(objects_on, key=lambda p: (p.displayed, p.index))):
                pixels, _ = image.geometry.plane_image(image.data, plane)
                labels = np.ascontiguousarray(plane.view(image.session.labels))
                ids = objects_on[plane]
                keep = labels > 0 if ids is None else np.isin(labels, ids)  # never negative ids
                labels = _trainer_ids(np.where(keep, labels, 0).astype(labels.dtype))
                n_objects += len(_trainable(labels))
                n_planes += 1
                stem = f"image{k:03d}-plane{i:04d}"
                tifffile.imwrite(  # axes written, so that the trainer never reads its rows as pages
                    out / "images" / f"{stem}.tif", np.ascontiguousarray(pixels),
                    metadata={"axes": "YX" if pixels.ndim == 2 else "YXC"},
                )
                tifffile.imwrite(out / "labels" / f"{stem}.tif", labels, compression="zlib")
    except BaseException:  # a full disk, an unreadable plane: no half-written data folder is left
        shutil.rmtree(out, ignore_errors=True)
        raise
    used = tuple(image.name for image, planes in todo if planes)
    return Exported(n_planes, n_objects, spanning, small, used)


def export_for_run(
    images: Sequence[AnnotatedImage], root: Path, name: str
) -> tuple[Path, Path, Exported]:
    """Export the committed objects into a new ``<name>-<time>[-k]-data`` folder under ``root``.

    Returns:
        (run folder, data folder, what was exported): the run folder does not exist yet,
        and no other fine-tune (of this or another dock) gets either folder.

    Raises:
        ValueError: no committed objects.
        OSError: the folders cannot be created.
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        base = f"{name}-{stamp}" + (f"-{k}" if k else "")
        run_dir, data_dir = root / base, root / f"{base}-data"
        if run_dir.exists():
            continue
        try:
            exported = export_committed(images, data_dir)
        except FileExistsError:
            continue
        return run_dir, data_dir, exported
    raise OSError(f"no free run folder name for {name}-{stamp} in {root}")


@dataclass
class FineTuneSpec:
    """What to train.

    Attributes:
        arch, model_kwargs: the architecture (as the registry names it).
        init: starting weights: a .safetensors path, "default", "imagenet" or "scratch".
        data_dirs: training folders (the exported objects, optionally the user's folder).
        out: run folder (must not hold a run).
        minutes, iterations: budget (one of them).
        batch_size, crop_size, device: trainer settings.
        threads: CPU threads of the trainer (default: all cores but one, kept for predictions).
    """

    arch: str
    init: str
    data_dirs: list[str]
    out: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    minutes: float | None = 5.0
    iterations: int | None = None
    batch_size: int = 4
    crop_size: int = 256
    device: str = "auto"
    threads: int = field(default_factory=lambda: max(1, available_cpus() - 1))  # one left for clicks

    def command(self) -> list[str]:
        """The ``napari-clickseg train`` command line (run with this Python)."""
        cmd = [sys.executable, "-m", "napari_clickseg.cli", "train", "--model", self.arch]
        for d in self.data_dirs:
            cmd += ["--data", str(d)]
        cmd += ["--init", self.init, "--out", self.out, "--device", self.device]
        cmd += ["--batch-size", str(self.batch_size), "--crop-size", str(self.crop_size)]
        cmd += ["--threads", str(self.threads)]
        if self.iterations is not None:
            cmd += ["--iterations", str(self.iterations)]
        else:
            cmd += ["--minutes", str(self.minutes)]
        if self.model_kwargs:
            cmd += ["--set", f"model_kwargs={json.dumps(self.model_kwargs)}"]
        return cmd

    def progress(self, line: str, elapsed_s: float) -> float | None:
        """Fraction done after a log line (iterations) or ``elapsed_s`` after the first step
        (minutes)."""
        if self.iterations:
            step = iteration_of(line)
            return None if step is None else min(1.0, step / self.iterations)
        if self.minutes:
            return min(1.0, elapsed_s / (60.0 * self.minutes))
        return None


class TrainingProcess:
    """``napari-clickseg train`` in a child process; its output lines, and SIGTERM to cancel."""

    def __init__(self, spec: FineTuneSpec) -> None:
        self.spec = spec
        self.lines_seen: list[str] = []
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            spec.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
        )
        self.cancelled = False
        _LIVE.add(self)

    def lines(self) -> Iterator[str]:
        """Output lines until the process ends (blocking; call from a worker thread)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            self.lines_seen.append(line)
            del self.lines_seen[:-200]
            yield line
        self.proc.wait()
        _LIVE.discard(self)

    def cancel(self) -> None:
        """Ask the trainer to stop (it writes a checkpoint first); once: a second SIGTERM
        would interrupt the checkpoint."""
        if self.proc.poll() is None and not self.cancelled:
            self.cancelled = True
            self.proc.terminate()

    @property
    def returncode(self) -> int | None:
        """The trainer's exit status, None while it runs."""
        return self.proc.poll()


@atexit.register
def stop_live(timeout: float | None = None) -> None:
    """At exit: cancel running trainers and wait for their checkpoints (then kill)."""
    procs = [p for p in list(_LIVE) if p.proc.poll() is None]
    _LIVE.clear()
    for p in procs:
        p.cancel()
    for p in procs:
        try:  # reads what is left of its output: a full or closed pipe would stop it
            p.proc.communicate(timeout=EXIT_WAIT_S if timeout is None else timeout)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            p.proc.kill()


def result_weights(out: str | os.PathLike) -> Path | None:
    """The weights a run produced: best.safetensors if validated, else last.safetensors."""
    for name in ("best.safetensors", "last.safetensors"):
        p = Path(out) / name
        if p.is_file():
            return p
    return None


def write_card(
    weights: Path,
    spec: FineTuneSpec,
    base: dict[str, Any],
    data: dict[str, Any],
    log_tail: list[str],
) -> Path:
    """A markdown model card beside ``weights``: base model, data, budget, command, last log lines."""
    from ..weights import sha256_file

    card = weights.with_suffix(".md")
    lines = [
        f"# Fine-tuned {spec.arch} ({weights.name})",
        "",
        f"- written: {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- weights sha256: `{sha256_file(weights)}`",
        f"- base model: {base.get('name')} (arch {spec.arch}, weights sha256 "
        f"{base.get('weights_sha256') or 'none: ' + spec.init})",
        f"- data: {data.get('objects')} committed objects on {data.get('planes')} plane(s) of "
        f"image(s) {', '.join(map(repr, data.get('images', [])))}"
        + (f", plus folder {data['extra']}" if data.get("extra") else ""),
        f"- budget: {f'{spec.iterations} iterations' if spec.iterations else f'{spec.minutes} minutes'},"
        f" batch {spec.batch_size}, crop {spec.crop_size}, device {spec.device}"
        + (" (cancelled before its end: the weights of its last step)" if data.get("cancelled") else ""),
        f"- command: `python -m {' '.join(spec.command()[2:])}`",
        "- scores: not measured on held-out data; the run folder's log.csv has the training loss",
        "",
        "Last lines of the training log:",
        "",
        "```",
        *log_tail[-10:],
        "```",
        "",
    ]
    with replacing(card) as tmp:
        tmp.write_text("\n".join(lines))
    return card
