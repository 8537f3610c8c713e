"""``napari-clickseg bench``: per-click latency, memory and training speed.

For every registered model with shipped weights (or, with ``--random-init``,
every registered model with random weights; the timings do not depend on the
weights' values) and every image size (default 512x512 and 4096x4096, zoom-in
on), it measures on one real sample image (a DSB2018 nuclei image from the
shared data, mirrored out to the size; a synthetic blob image when the shared
data are absent) with robot-user clicks:

Predictions are made as the dock makes them (structural integrity on, no graph cut).

- **first click**: ``predict`` right after ``set_image`` (image features computed),
- **later clicks**: each further click (cached image features where the model has them),
- **f-BRS / BRS**: seconds per click with test-time refinement,
- **random walker**: the classical baseline on the same image and the same clicks,
  run once without a warm-up (its robot clicks are made on it): the median of all
  its clicks, the first included; and the ratio model / random walker of those medians,
- **peak RSS**: every case (model x size x BRS mode) runs in a fresh Python
  subprocess that reports its own ``VmHWM`` from ``/proc/self/status`` (the
  peak resident set; ``resource.getrusage`` ``ru_maxrss`` where /proc is
  missing), together with its RSS once torch and the model are loaded, so the
  cost of the image and the clicks shows as the difference. With
  ``--no-isolate`` everything runs in this process and the number is the
  process's peak so far. On CUDA the peak allocated GPU memory is reported too;
- **training throughput**: samples/s of a few fine-tuning iterations of the
  default model on the sample image (``napari_clickseg.training``);
- the environment: threads, compute dtype, channels_last, device, CPU model.

The clicks: the robot user (``robot.next_click``) clicks against the random
walker's predictions, so every model replays the same, realistic click
sequence (first click at the object's centre, then corrections around it).
Timings are wall-clock medians and 90th percentiles over repeats after one
warm-up call; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data.io import MIN_OBJECT_PX
from .evaluation.command import check_out, removed_if_left_empty
from .evaluation.metrics import time_stats

__all__ = ["add_arguments", "run", "sample_image", "peak_rss_mb"]

DEFAULT_SIZES = (512, 4096)
QUICK_SIZES = (256,)


# --------------------------------------------------------------------------- environment
def _proc_status(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB -> MiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (VmHWM, else ru_maxrss)."""
    v = _proc_status("VmHWM")
    if v is not None:
        return v
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def rss_mb() -> float | None:
    """Current resident set size in MiB (None where /proc is missing)."""
    return _proc_status("VmRSS")


def environment(device: str | None = None) -> dict[str, Any]:
    """Threads, device, CPU/GPU model and versions."""
    import torch

    from .engine.device import cpu_has_native_bf16, cpu_model, pick_device

    dev = pick_device(device)
    env = {
        "device": str(dev),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


# --------------------------------------------------------------------------- sample image
def _shared_data() -> Path | None:
    env = os.environ.get("NAPARI_CLICKSEG_SHARED_DATA")
    if env:
        cands = [Path(env)]
    else:
        here = Path(__file__).resolve()
        cands = [p / "shared" / "data" for p in (here.parents[2].parent, Path.cwd().parent, Path.cwd())]
    for c in cands:
        if (c / "dsb2018").is_dir():
            return c
    return None


def _synthetic(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Gray image with ~40 bright elliptic blobs and their instance labels."""
    yy, xx = np.mgrid[0:size, 0:size]
    labels = np.zeros((size, size), np.int32)
    for k in range(1, 41):
        cy, cx = rng.uniform(10, size - 10, 2)
        ay, ax = rng.uniform(5, 14, 2)
        m = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1
        labels[m & (labels == 0)] = k
    img = 30 + 150 * (labels > 0) + rng.normal(0, 12, (size, size))
    from scipy import ndimage

    img = ndimage.gaussian_filter(img, 1.0)
    return np.clip(img, 0, 255).astype(np.uint8), labels


def _source(
    image: str | None = None, labels: str | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """An image, its instance labels and where they came from.

    The ``image``/``labels`` files, else the first DSB2018 validation image with at
    least 20 nuclei, else a synthetic blob image.
    """
    from .data.io import read_array

    if image is not None:
        if labels is None:
            raise ValueError("--image needs --labels (an instance map or mask of the same size)")
        img, lab = read_array(image, palette_colours=True), read_array(labels).astype(np.int64)
        if lab.ndim != 2 or lab.shape != img.shape[:2]:
            raise ValueError(
                f"{labels}: labels of shape {lab.shape} do not fit {image} of shape {img.shape}; "
                "--labels must be a 2D instance map or mask of the image's size"
            )
        return img, lab, str(image)
    root = _shared_data()
    if root is not None:
        for split in ("val", "train"):
            d = root / "dsb2018" / split
            if not (d / "images").is_dir():
                continue
            for p in sorted((d / "images").glob("*.png")):
                lp = d / "labels" / (p.stem + ".tif")
                if not lp.is_file():
                    continue
                cand = read_array(lp).astype(np.int64)
                if len(np.unique(cand)) > 20:
                    return read_array(p, palette_colours=True), cand, str(p)
    img, lab = _synthetic(np.random.default_rng(seed))
    return img, lab, "synthetic blobs"


def sample_image(
    size: int, image: str | None = None, labels: str | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """A (size x size) image, the mask of one object near its centre, and where it came from.

    The source image (see ``_source``) is mirrored out (or centre-cropped) to
    ``size``; the object is the one of median area nearest the centre of the
    original, and its mirror copies are not part of the mask.
    """
    img, lab, src = _source(image, labels, seed)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    h, w = lab.shape
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    keep = counts >= MIN_OBJECT_PX
    ids, counts = ids[keep], counts[keep]
    if ids.size == 0:
        raise ValueError(f"{src}: no object of at least {MIN_OBJECT_PX} px in the labels")
    from scipy import ndimage

    centres = np.array(ndimage.center_of_mass(np.ones_like(lab), lab, ids))
    dist = np.hypot(centres[:, 0] - h / 2, centres[:, 1] - w / 2)
    typical = np.abs(np.log(counts / np.median(counts))) < 0.5
    order = np.lexsort((dist, ~typical))
    obj = ids[order[0]]

    def fit(a: np.ndarray, fill_other: bool) -> np.ndarray:
        ph, pw = max(0, size - h), max(0, size - w)
        pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (a.ndim - 2)
        if fill_other:
            out = np.pad(a, pad, mode="constant")
        else:
            out = np.pad(a, pad, mode="symmetric")
        oy, ox = (out.shape[0] - size) // 2, (out.shape[1] - size) // 2
        return out[oy : oy + size, ox : ox + size]

    big = fit(img, False)
    gt = fit(lab == obj, True)
    if not gt.any():
        raise ValueError("the chosen object fell outside the crop")
    return np.ascontiguousarray(big), gt, src


# --------------------------------------------------------------------------- one case
def _robot_clicks_rw(image: np.ndarray, gt: np.ndarray, n: int) -> tuple[list, list[float]]:
    """Robot clicks (``[row, col, positive]``) against the random walker, and its per-click seconds."""
    from .evaluation.baseline import RandomWalkerPredictor
    from .evaluation.runner import run_object

    rw = RandomWalkerPredictor()
    rw.set_image(image)
    rec = run_object(rw.predict, gt, None, n, corrective=False)
    return rec["clicks"], rec["seconds"]


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one benchmark case in this process (see module docstring); returns its numbers."""
    import torch

    from .clicks import Click

    if case.get("threads"):
        torch.set_num_threads(int(case["threads"]))

    def read_sample() -> tuple[np.ndarray, np.ndarray]:  # after "rss_loaded_mb": not part of it
        data = np.load(case["data"])
        return data["image"], data["gt"]

    out: dict[str, Any] = {"case": {k: v for k, v in case.items() if k != "data"}}
    if case["model"] == "random_walker":
        out["rss_loaded_mb"] = rss_mb()
        image, gt = read_sample()
        clicks, secs = _robot_clicks_rw(image, gt, case["n_clicks"])
        out["clicks"] = clicks
        out["click_s"] = time_stats(secs)
        out["peak_rss_mb"] = peak_rss_mb()
        return out

    from .engine import Predictor
    from .models import create_model

    if case.get("random_init"):
        torch.manual_seed(0)
        model = create_model(case["model"])
        p = Predictor(model, device=case.get("device"), dtype=case.get("dtype", "auto"), zoom_in=case["zoom_in"])
    else:
        p = Predictor.from_pretrained(
            case["model"], device=case.get("device"), dtype=case.get("dtype", "auto"), zoom_in=case["zoom_in"]
        )
    dev = p.device if hasattr(p, "device") else torch.device("cpu")
    cuda = getattr(dev, "type", "cpu") == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    clicks = [Click(float(r), float(c), bool(pos), i) for i, (r, c, pos) in enumerate(case["clicks"])]
    mode = case.get("mode", "off")
    out["info"] = {k: v for k, v in p.info.items() if isinstance(v, (str, int, float, bool, type(None), dict))}
    out["channels_last"] = bool(getattr(p, "_channels_last", False))
    out["rss_loaded_mb"] = rss_mb()
    image, _ = read_sample()
    # warm-up (first-call allocations, kernel choice, the first backward of BRS), not recorded
    p.set_image(image)
    for k in range(1, len(clicks) + 1):
        p.predict(clicks[:k], brs=mode)  # structural integrity on, as in the dock
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    set_s, first_s, later_s, forwards = [], [], [], []
    for _ in range(int(case["repeats"])):
        t0 = time.perf_counter()
        p.set_image(image)  # clears the feature cache and history
        sync()
        set_s.append(time.perf_counter() - t0)
        for k in range(1, len(clicks) + 1):
            t0 = time.perf_counter()
            p.predict(clicks[:k], brs=mode)  # structural integrity on, as in the dock
            sync()
            dt = time.perf_counter() - t0
            (first_s if k == 1 else later_s).append(dt)
            forwards.append(int(getattr(p, "last_stats", {}).get("forwards", -1)))
    out["set_image_s"] = time_stats(set_s)
    out["first_click_s"] = time_stats(first_s)
    out["later_click_s"] = time_stats(later_s)
    out["all_click_s"] = time_stats(first_s + later_s)
    out["forwards_per_click"] = float(np.mean(forwards)) if forwards else None
    out["peak_rss_mb"] = peak_rss_mb()
    if cuda:
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def _run_here(case: dict[str, Any]) -> dict[str, Any]:
    """``run_case`` in this process; an exception becomes the case's ``error``."""
    try:
        return run_case(case)
    except Exception as e:  # report, never crash the benchmark
        return {"case": {k: v for k, v in case.items() if k != "data"}, "error": f"{type(e).__name__}: {e}"}


def _run_isolated(case: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """``run_case`` in a fresh interpreter; the result is the last line of its stdout."""
    cmd = [sys.executable, "-m", "napari_clickseg.bench", "--case-json", json.dumps(case)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": case, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"case": case, "error": " / ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- training
def training_throughput(
    model: str, image: np.ndarray, gt_labels: np.ndarray, iterations: int, batch_size: int,
    random_init: bool, device: str | None, crop_size: int = 320, threads: int | None = None,
) -> dict[str, Any]:
    """Samples/s of a few fine-tuning iterations (``napari_clickseg.training``), or n/a."""
    import csv

    import tifffile
    from PIL import Image

    from .training.config import TrainConfig
    from .training.trainer import train

    with tempfile.TemporaryDirectory(prefix="clickseg-bench-") as tmp:
        root = Path(tmp) / "data"
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
        img8 = image if image.dtype == np.uint8 else (255 * (image - image.min()) / max(np.ptp(image), 1e-9)).astype(np.uint8)
        for k in range(4):  # four flipped copies
            im = np.flip(img8, axis=k % 2) if k else img8
            lb = np.flip(gt_labels, axis=k % 2) if k else gt_labels
            Image.fromarray(np.ascontiguousarray(im)).save(root / "images" / f"s{k}.png")
            tifffile.imwrite(root / "labels" / f"s{k}.tif", np.ascontiguousarray(lb.astype(np.uint16)))
        cfg = TrainConfig(
            model=model,
            train_dirs=[str(root)],
            out=str(Path(tmp) / "run"),
            init="scratch" if random_init else "default",
            iterations=iterations + 1,
            batch_size=batch_size,
            crop_size=crop_size,
            val_every=0,
            log_every=1,
            checkpoint_minutes=1e9,
            device=device or "auto",
            **({"threads": threads} if threads else {}),
        )
        msgs: list[str] = []
        t0 = time.perf_counter()
        try:
            summary = train(cfg, log=msgs.append)
        except Exception as e:  # report, never crash the benchmark
            return {"samples_per_s": None, "note": f"n/a: training failed: {type(e).__name__}: {e}"}
        wall = time.perf_counter() - t0
        sps = []
        log_csv = Path(cfg.out) / "log.csv"
        if log_csv.is_file():
            with open(log_csv) as f:
                sps = [float(r["samples_per_s"]) for r in csv.DictReader(f) if r.get("samples_per_s")]
        rate = float(np.median(sps[1:])) if len(sps) > 1 else (
            summary["steps"] * batch_size / summary["elapsed_s"] if summary.get("elapsed_s") else None
        )
    return {
        "model": model,
        "init": cfg.init,
        "iterations_timed": max(0, len(sps) - 1),
        "batch_size": batch_size,
        "crop_size": crop_size,
        "samples_per_s": rate,
        "wall_s_incl_setup": wall,
        "note": "median over iterations after the first (warm-up)",
    }


# --------------------------------------------------------------------------- report
def _fmt(v: Any, d: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{d}f}" if isinstance(v, float) else str(v)


def _med(r: dict | None, key: str) -> float | None:
    if not r or "error" in r:
        return None
    return (r.get(key) or {}).get("median")


def _p90(r: dict | None, key: str) -> float | None:
    if not r or "error" in r:
        return None
    return (r.get(key) or {}).get("p90")


def markdown(report: dict[str, Any]) -> str:
    """The benchmark as a markdown table plus environment lines."""
    env = report["environment"]
    lines = [
        "| model | size | first click s (median / p90) | later clicks s (median / p90) | f-BRS s/click | "
        "BRS s/click | random walker s/click | model / RW (later) | peak RSS MiB (loaded) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        off, rw = row.get("off"), row.get("random_walker")
        later, rwm = _med(off, "later_click_s"), _med(rw, "click_s")
        ratio = later / rwm if later and rwm else None
        rss = off.get("peak_rss_mb") if off and "error" not in off else None
        loaded = off.get("rss_loaded_mb") if off and "error" not in off else None
        err = f" ({off['error']})" if off and "error" in off else ""
        lines.append(
            f"| {row['model']}{err} | {row['size']} | {_fmt(_med(off, 'first_click_s'))} / "
            f"{_fmt(_p90(off, 'first_click_s'))} | {_fmt(later)} / {_fmt(_p90(off, 'later_click_s'))} | "
            f"{_fmt(_med(row.get('fbrs'), 'all_click_s'))} | {_fmt(_med(row.get('brs'), 'all_click_s'))} | "
            f"{_fmt(rwm)} | {_fmt(ratio, 2)} | {_fmt(rss, 0)} ({_fmt(loaded, 0)}) |"
        )
    t = report.get("training") or {}
    dtype = report.get("dtype_path", {})
    st = report["settings"]
    brs_txt = (
        f"{', '.join(st['brs_modes'])} timed on {st['brs_clicks']} clicks, 1 repeat"
        if st.get("brs_modes") else "none timed"
    )
    if t.get("samples_per_s") is not None:
        train_txt = (
            f"- training throughput ({t.get('model')}, init {t.get('init')}, batch {t.get('batch_size')}, "
            f"crop {t.get('crop_size')}): {_fmt(t.get('samples_per_s'), 2)} samples/s ({t.get('note')})"
        )
    else:
        train_txt = f"- training throughput: {t.get('note', 'n/a')}"
    lines += [
        "",
        f"- device: {env.get('device')}; CPU: {env.get('cpu')} ({env.get('cpu_count')} logical cores, "
        f"capability {env.get('cpu_capability')}); torch {env.get('torch')}, {env.get('torch_threads')} threads"
        + (f"; GPU: {env['gpu']}" if env.get("gpu") else ""),
        f"- dtype path: {dtype.get('dtype', 'n/a')}, channels_last {dtype.get('channels_last', 'n/a')}; "
        f"weights: {st['weights']}; zoom-in: {st['zoom_in']}; structural integrity: on (as in the dock)",
        f"- image: {report['image']['source']} mirrored to each size; object of "
        f"{report['image'].get('object_px')} px; clicks: robot user against the random walker "
        f"({st['n_clicks']} per sequence), {st['repeats']} repeats after a warm-up; BRS modes: {brs_txt}",
        train_txt,
        f"- memory: {report['settings']['memory']}",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the ``bench`` subcommand."""
    p.add_argument("--random-init", action="store_true",
                   help="bench every registered model with random weights (timings only)")
    p.add_argument("--models", default=None, help="comma-separated model names (default: all)")
    p.add_argument("--sizes", default=None,
                   help=f"comma-separated square image sizes (default: {','.join(map(str, DEFAULT_SIZES))}; "
                   f"--quick: {','.join(map(str, QUICK_SIZES))})")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: small size, 1 repeat, 3 clicks, f-BRS only, 1 training iteration")
    p.add_argument("--repeats", type=int, default=None, help="repeats of each click sequence (default 3)")
    p.add_argument("--clicks", type=int, default=None, help="clicks per sequence (default 6)")
    p.add_argument("--brs-modes", default=None,
                   help="comma-separated test-time refinement modes to time (default fbrs,brs; '' for none)")
    p.add_argument("--brs-clicks", type=int, default=None, help="clicks timed per BRS mode (default 3)")
    p.add_argument("--no-zoom-in", action="store_true", help="bench without zoom-in")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-walker baseline")
    p.add_argument("--train-iters", type=int, default=None,
                   help="training iterations timed (default 3, --quick 1; 0 skips)")
    p.add_argument("--train-batch", type=int, default=None, help="training batch size (default 8, --quick 2)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--image", default=None, help="bench on this image file instead of the sample")
    p.add_argument("--labels", default=None, help="instance labels / mask for --image")
    p.add_argument("--no-isolate", action="store_true",
                   help="run all cases in this process (peak RSS is then the process peak so far)")
    p.add_argument("--case-timeout", type=float, default=1800.0, help="seconds per isolated case")
    p.add_argument("--out", default=None, help="write bench.json and bench.md here")
    p.add_argument("--overwrite", action="store_true", help="replace bench.json and bench.md in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")


REPORT_FILES = ("bench.json", "bench.md")


def _names(args: argparse.Namespace) -> list[str]:
    from .models import list_models
    from .weights import shipped_models

    if args.random_init:
        names = list_models()
    else:
        names = shipped_models()
    if args.models is not None:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        if not wanted:
            raise ValueError(f"--models names no model: {args.models!r}")
        valid = list_models() if args.random_init else names
        bad = [m for m in wanted if m not in valid]
        if bad:
            what = "registered" if args.random_init else "shipped (use --random-init for untrained models)"
            raise ValueError(f"unknown model(s) {bad}; {what}: {', '.join(valid) or 'none'}")
        names = wanted
    return names


def _at_least(value: int | None, default: int, flag: str, minimum: int = 1) -> int:
    """``value`` when the option was given (refused below ``minimum``), else ``default``."""
    if value is None:
        return default
    if value < minimum:
        raise ValueError(f"{flag} must be at least {minimum}, got {value}")
    return value


def _sizes(text: str | None, quick: bool) -> list[int]:
    """Parse ``--sizes`` (comma-separated integers >= 64); the defaults when not given."""
    if not text:
        return list(QUICK_SIZES if quick else DEFAULT_SIZES)
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--sizes takes comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 64 for s in sizes):
        raise ValueError(f"--sizes must be at least 64, got {text!r}")
    return sizes


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write JSON/markdown with ``--out``.

    Raises:
        ValueError: a count option below 1 (``--train-iters`` below 0), a bad ``--sizes``,
            ``--case-timeout`` not positive, an unknown model or BRS mode.
    """
    quick = args.quick
    if args.labels is not None and args.image is None:
        raise ValueError("--labels needs --image (the image those labels belong to)")
    sizes = _sizes(args.sizes, quick)
    repeats = _at_least(args.repeats, 1 if quick else 3, "--repeats")
    n_clicks = _at_least(args.clicks, 3 if quick else 6, "--clicks")
    brs_clicks = _at_least(args.brs_clicks, 2 if quick else 3, "--brs-clicks")
    train_iters = _at_least(args.train_iters, 1 if quick else 3, "--train-iters", minimum=0)
    # random weights train their BatchNorm statistics, which need 2 samples (see TrainConfig)
    train_batch = _at_least(args.train_batch, 2 if quick else 8, "--train-batch", minimum=2 if args.random_init else 1)
    if args.threads is not None:
        _at_least(args.threads, 1, "--threads")
    if not 0 < args.case_timeout <= 1e6:
        raise ValueError(f"--case-timeout must be a number of seconds in (0, 1e6], got {args.case_timeout}")
    modes = (
        [m.strip() for m in args.brs_modes.split(",") if m.strip()] if args.brs_modes is not None
        else (["fbrs"] if quick else ["fbrs", "brs"])
    )
    for m in modes:
        if m not in ("fbrs", "brs"):
            raise ValueError(f"--brs-modes takes fbrs and/or brs, got {m!r}")
    names = _names(args)
    with removed_if_left_empty(args.out):
        out = check_out(args.out, args.overwrite, files=REPORT_FILES) if args.out else None
        report = _run_cases(args, names, sizes, repeats, n_clicks, brs_clicks, modes, train_iters, train_batch)
    md = markdown(report)
    print(md)
    if out is not None:
        from .evaluation.report import jsonable
        from .files import replacing

        with replacing(out / "bench.json") as js, replacing(out / "bench.md") as mdf:  # both or neither
            js.write_text(json.dumps(jsonable(report), indent=1) + "\n")
            mdf.write_text("# napari-clickseg bench\n\n" + md)
        print(f"json: {out / 'bench.json'}\nmarkdown: {out / 'bench.md'}")
    return 0


def _run_cases(args: argparse.Namespace, names: list[str], sizes: list[int], repeats: int, n_clicks: int,
               brs_clicks: int, modes: list[str], train_iters: int, train_batch: int) -> dict[str, Any]:
    """Time every model and size (and the training throughput): the report's data."""
    quick = args.quick
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    if not names:
        print(
            "napari-clickseg bench: no model has shipped weights yet; use --random-init to time "
            "the registered architectures with random weights",
            file=sys.stderr,
        )
    env = environment(args.device)
    zoom = not args.no_zoom_in
    settings = {
        "sizes": sizes,
        "repeats": repeats,
        "n_clicks": n_clicks,
        "brs_modes": modes,
        "brs_clicks": brs_clicks,
        "zoom_in": zoom,
        "weights": "random init" if args.random_init else "shipped",
        "isolated": not args.no_isolate,
        "memory": (
            "peak RSS = VmHWM of a fresh subprocess per case (model x size x BRS mode); "
            "(loaded) = its RSS after importing torch and building the model"
            if not args.no_isolate
            else "peak RSS = VmHWM of this one process so far (cases not isolated)"
        ),
    }
    report: dict[str, Any] = {
        "environment": env, "settings": settings, "rows": [], "image": {}, "dtype_path": {},
    }
    runner = (lambda c: _run_here(c)) if args.no_isolate else (lambda c: _run_isolated(c, args.case_timeout))
    with tempfile.TemporaryDirectory(prefix="clickseg-bench-") as tmp:
        for size in sizes:
            image, gt, src = sample_image(size, args.image, args.labels)
            report["image"] = {"source": src, "object_px": int(gt.sum())}
            data = str(Path(tmp) / f"sample{size}.npz")
            np.savez(data, image=image, gt=gt)
            base = {"data": data, "size": size, "zoom_in": zoom, "device": args.device,
                    "dtype": args.dtype, "threads": args.threads, "random_init": args.random_init,
                    "repeats": repeats}
            say(f"[{size}x{size}] robot clicks against the random walker ({n_clicks})")
            rw = runner({**base, "model": "random_walker", "n_clicks": n_clicks})
            if "error" in rw:
                raise ValueError(f"random-walker case failed: {rw['error']}")
            clicks = rw["clicks"]
            for name in names:
                row: dict[str, Any] = {"model": name, "size": size}
                if not args.no_baseline:
                    row["random_walker"] = rw
                say(f"[{size}x{size}] {name}: {repeats} x {len(clicks)} clicks")
                row["off"] = runner({**base, "model": name, "mode": "off", "clicks": clicks})
                if "error" not in row["off"]:
                    report["dtype_path"] = {
                        "dtype": row["off"]["info"].get("dtype"),
                        "channels_last": row["off"].get("channels_last"),
                    }
                for mode in modes:
                    say(f"[{size}x{size}] {name}: {mode} ({brs_clicks} clicks)")
                    row[mode] = runner({**base, "model": name, "mode": mode, "repeats": 1,
                                        "clicks": clicks[:brs_clicks]})
                report["rows"].append(row)
        if train_iters > 0 and (names or args.random_init):
            from .weights import shipped_manifest

            default = shipped_manifest().get("default") if not args.random_init else None
            tmodel = default or (names[0] if names else "early")
            say(f"training throughput: {tmodel}, {train_iters} iterations, batch {train_batch}")
            img, lab = _train_sample(args)
            report["training"] = training_throughput(
                tmodel, img, lab, train_iters, train_batch, args.random_init, args.device,
                crop_size=256 if quick else 320, threads=args.threads,
            )
        else:
            report["training"] = {"samples_per_s": None, "note": "n/a: skipped"}
    return report


def _train_sample(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """An image with instance labels for the training-throughput run."""
    img, lab, _ = _source(args.image, args.labels)
    return img, lab


def _child_main(argv: list[str]) -> int:
    """Entry point of an isolated case: ``python -m napari_clickseg.bench --case-json JSON``."""
    if len(argv) != 2 or argv[0] != "--case-json":
        print("usage: python -m napari_clickseg.bench --case-json JSON", file=sys.stderr)
        return 2
    result = run_case(json.loads(argv[1]))
    from .evaluation.report import jsonable

    print(json.dumps(jsonable(result)))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
