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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import MIN_OBJECT_PX, available_cpus
from ..files import replacing
from .planes import ImageGeometry, Plane
from .session import AnnotationSession

__all__ = [
    "FineTuneSpec", "TrainingProcess", "export_committed", "export_for_run", "result_weights", "stop_live",
    "write_card",
]

_ITER = re.compile(r"^iteration (\d+) \|")
_LIVE: set[TrainingProcess] = set()  # strong: a run the dock let go of is still waited for
EXIT_WAIT_S = 60.0  # how long Python's exit waits for a cancelled trainer's checkpoint


def _trainable(labels: np.ndarray) -> set[int]:
    """The ids in a label plane with enough pixels for the trainer to use them."""
    ids, counts = np.unique(labels, return_counts=True)
    return {int(i) for i, n in zip(ids, counts, strict=True) if i != 0 and n >= MIN_OBJECT_PX}


def export_committed(
    session: AnnotationSession, geometry: ImageGeometry, data: Any, out_dir: str | os.PathLike
) -> tuple[int, int]:
    """Write every plane holding a committed object as ``images/`` + ``labels/`` tifs.

    Images keep their raw dtype and channels. A plane's labels hold the objects committed
    on it (a slice shown transposed is the same plane); objects committed on other planes
    that cross it are left out, as only their own plane says where they end, and so are
    objects erased by hand down to fewer pixels than the trainer uses (a plane left with
    none is not written). On a 2D image every object is on its one plane, painted ones
    included. Images are written with their axes, so they read back as they are.

    Returns:
        (planes written, objects on them the trainer uses).

    Raises:
        ValueError: if no committed object has the pixels the trainer needs.
        OSError: ``out_dir`` exists (a folder is never written into twice).
    """
    import tifffile

    objects_on: dict[Plane, list[int] | None] = {}  # None: every object on the plane
    if len(geometry.spatial_shape) == 2:
        if _trainable(session.labels):
            objects_on[Plane.full_2d()] = None
    else:
        for oid, record in session.records.items():
            if record.plane is not None:
                plane = Plane(tuple(sorted(record.plane.displayed)), record.plane.index)
                objects_on[plane] = [*(objects_on.get(plane) or []), int(oid)]
        for plane, ids in list(objects_on.items()):  # objects erased by hand, wholly or nearly
            trainable = _trainable(plane.view(session.labels))
            kept = [oid for oid in ids or [] if oid in trainable]
            if kept:
                objects_on[plane] = kept
            else:
                del objects_on[plane]
    if not objects_on:
        raise ValueError(
            f"no committed objects of at least {MIN_OBJECT_PX} pixels to train on: commit some objects first"
        )
    out = Path(out_dir)
    out.mkdir(parents=True)
    try:
        (out / "images").mkdir()
        (out / "labels").mkdir()
        objects = 0
        for i, plane in enumerate(sorted(objects_on, key=lambda p: (p.displayed, p.index))):
            image, _ = geometry.plane_image(data, plane)
            labels = np.ascontiguousarray(plane.view(session.labels))
            ids = objects_on[plane]
            if ids is not None:
                labels = np.where(np.isin(labels, ids), labels, 0).astype(labels.dtype)
            objects += len(_trainable(labels))
            tifffile.imwrite(  # axes written, so that the trainer never reads its rows as pages
                out / "images" / f"plane{i:04d}.tif", np.ascontiguousarray(image),
                metadata={"axes": "YX" if image.ndim == 2 else "YXC"},
            )
            tifffile.imwrite(out / "labels" / f"plane{i:04d}.tif", labels, compression="zlib")
    except BaseException:  # a full disk, an unreadable plane: no half-written data folder is left
        shutil.rmtree(out, ignore_errors=True)
        raise
    return len(objects_on), objects


def export_for_run(
    session: AnnotationSession, geometry: ImageGeometry, data: Any, root: Path, name: str
) -> tuple[Path, Path, int, int]:
    """Export the committed objects into a new ``<name>-<time>[-k]-data`` folder under ``root``.

    Returns:
        (run folder, data folder, planes, objects): the run folder does not exist yet,
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
            planes, objects = export_committed(session, geometry, data, data_dir)
        except FileExistsError:
            continue
        return run_dir, data_dir, planes, objects
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
        """Fraction done after a log line (iterations) or after ``elapsed_s`` (minutes)."""
        if self.iterations:
            m = _ITER.match(line)
            return min(1.0, int(m.group(1)) / self.iterations) if m else None
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
        f"- data: {data.get('objects')} committed objects on {data.get('planes')} plane(s) of image "
        f"{data.get('image')!r}" + (f", plus folder {data['extra']}" if data.get("extra") else ""),
        f"- budget: {f'{spec.iterations} iterations' if spec.iterations else f'{spec.minutes} minutes'},"
        f" batch {spec.batch_size}, crop {spec.crop_size}, device {spec.device}",
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
