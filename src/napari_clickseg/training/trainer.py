"""The training loop: iterative click simulation, checkpoints, validation, logs, DDP.

Run it with ``train(config)`` or ``napari-clickseg train``. Under ``torchrun``
(``WORLD_SIZE`` > 1) it uses DistributedDataParallel (gloo on CPU, nccl on
GPU); every rank draws its own samples and only rank 0 writes files. Several
ranks may share one GPU (the click simulation runs on the CPU, so one process
rarely keeps a GPU busy); they then talk over gloo (NCCL wants one process per GPU).

The output folder holds ``config.json``, ``checkpoint.pt`` (latest, atomic,
``weights_only``-loadable), ``log.csv``, ``curves.png``, ``last.safetensors``
and ``best.safetensors`` (fewest validation clicks). An existing run is never
overwritten: pass ``resume=True`` to continue it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..clicks import encode_clicks
from ..data.augment import AugmentConfig
from ..data.folder import FolderDataset
from ..data.io import available_cpus
from ..files import replacing, same_file
from ..models import ClickSegModel, create_model
from ..robot import next_click
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .config import TrainConfig, option_name, resolve_model_name
from .losses import get_loss
from .samples import ClickSamples, GlobalIndexSampler
from .sampling import ClickSamplingConfig, array_to_clicks
from .validation import improves, validate, validation_sets

__all__ = ["RESUME_MAY_CHANGE", "RunDirError", "check_resume_options", "train", "lr_factor", "rank_device"]

#: config fields a resumed run may change: raising the budget extends the run (``out`` names
#: the run); the machine fields say where this part runs, not what it computes
RESUME_BUDGET = ("minutes", "iterations")
RESUME_MACHINE = ("device", "threads", "num_workers")
RESUME_MAY_CHANGE = (*RESUME_BUDGET, "out", *RESUME_MACHINE)

LOG_FIELDS = [
    "step", "elapsed_s", "lr", "loss", "samples_per_s",
    "val_noc@90", "val_noc@85", "val_nof@90", "val_iou@1", "val_iou@3", "val_iou@5", "val_auc",
]


class RunDirError(ValueError):
    """The output folder holds a run that would be overwritten, or no run to resume."""


class _Stop(BaseException):
    """Raised by the SIGTERM handler to stop cleanly (a checkpoint is written).

    A BaseException, like KeyboardInterrupt: an ``except Exception`` on the way (a file
    writer turning errors into its own) must not turn a stop into a failure."""


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def rank_device(device: torch.device, local_rank: int, local_world: int, gpus: int) -> tuple[torch.device, str]:
    """The device of one rank and the process-group backend.

    On GPU, ranks go round-robin over the node's ``gpus``; nccl needs one rank
    per GPU, so ranks that share a GPU use gloo. With nccl, CPU tensors (the
    broadcast clock, the logged loss) still go over gloo.
    """
    if device.type != "cuda":
        return device, "gloo"
    return torch.device("cuda", local_rank % gpus), ("cpu:gloo,cuda:nccl" if local_world <= gpus else "gloo")


def _init_distributed(device: torch.device) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    device, backend = rank_device(device, local_rank, local_world, gpus)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine / step / constant over progress."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_iterations))
    p = min(max(progress, 0.0), 1.0)
    if cfg.lr_schedule == "cosine":
        f = 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * p))
    elif cfg.lr_schedule == "step":
        f = 1.0 if p < 0.7 else (0.1 if p < 0.9 else 0.01)
    else:
        f = 1.0
    return warm * f


def _progress(cfg: TrainConfig, step: int, elapsed: float) -> float:
    ps = []
    if cfg.iterations:
        ps.append(step / cfg.iterations)
    if cfg.minutes:
        ps.append(elapsed / (60.0 * cfg.minutes))
    return max(ps)


def _hardware(device: torch.device, threads: int, world: int) -> dict[str, Any]:
    from ..engine.device import cpu_model

    hw = {
        "device": device.type,
        "processes": world,
        "threads_per_process": threads,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def _init_weights_file(cfg: TrainConfig) -> tuple[Path, str | None]:
    """The weights file ``cfg.init`` names ("default": the shipped weights of ``cfg.model``)."""
    from ..weights import WeightsError, resolve_weights

    try:
        return resolve_weights(cfg.model if cfg.init == "default" else cfg.init)
    except WeightsError as e:
        hint = " (start from ImageNet with --init imagenet)" if cfg.init == "default" else ""
        raise ValueError(f"--init {cfg.init}: {e}{hint}") from None


def _already_finished(cfg: TrainConfig, state: dict[str, Any]) -> bool:
    """Whether a resumed run has nothing left to do: it finished and its budget is not raised.

    Checkpoints from before the ``finished`` flag count as finished once the budget is spent.
    """
    spent = _progress(cfg, int(state["step"]), float(state["elapsed"])) >= 1.0
    return spent and bool(state.get("finished", True))


#: every file a run writes into its folder; a new run refuses a folder holding any of them
RUN_FILES = (CHECKPOINT_NAME, "config.json", "log.csv", "curves.png", "best.safetensors", "last.safetensors")


def check_resume_options(cfg: TrainConfig, explicit: Iterable[str]) -> None:
    """Refuse options given for ``--resume`` that differ from the run's saved config.

    A resumed run continues with its saved settings; only ``minutes`` and
    ``iterations`` (to extend it) and ``device``, ``threads`` and ``num_workers``
    (to continue on another machine) may change.

    Args:
        cfg: the configuration built from the command line.
        explicit: the fields the user set (options, ``--set`` keys, ``--config`` keys).

    Raises:
        RunDirError: listing each differing option with its given and saved value.
    """
    path = Path(cfg.out) / "config.json"
    if not path.is_file():
        return  # train() says there is nothing to resume
    saved, given = TrainConfig.load(path).to_dict(), cfg.to_dict()
    for d in (saved, given):  # folders compare as absolute paths (./DIR is DIR; saved runs hold them absolute)
        for k in ("train_dirs", "val_dirs"):
            if d.get(k) is not None:
                d[k] = [os.path.abspath(p) for p in d[k]]
    if "model" in explicit:
        given["model"] = resolve_model_name(cfg.model)
    differ = [
        f"{option_name(k)} {given[k]!r} (saved: {saved.get(k)!r})"
        for k in sorted(set(explicit) - set(RESUME_MAY_CHANGE))
        if given.get(k) is not None and given.get(k) != saved.get(k)  # None: "the model's default"
    ]
    if differ:
        raise RunDirError(
            f"--resume continues {cfg.out} with its saved settings, but these options differ: "
            f"{'; '.join(differ)}. Drop them (only --minutes, --iterations, --device, --threads and "
            "--workers may change on resume) "
            "or start a new run with another --out"
        )


def _earlier_stages(meta: dict) -> list[dict]:
    """The training stages behind a weights file, oldest first (its own last)."""
    tr = dict(meta.get("training") or {})
    if not tr:
        return []
    earlier = list(tr.pop("earlier_stages", []))
    return [*earlier, tr]


def _build_model(
    cfg: TrainConfig, log: Callable[[str], None]
) -> tuple[torch.nn.Module, list[dict], dict[str, Any]]:
    """The model to train, the training stages its init weights went through and the
    Predictor settings they carry (kept in the weights this run writes)."""
    from ..weights import load_weights

    if cfg.init in ("imagenet", "scratch"):
        model = create_model(cfg.model, **cfg.model_kwargs)
        if cfg.init == "imagenet":
            n = model.load_imagenet()
            if n == 0:
                raise ValueError(f"model {cfg.model!r} has no ImageNet-capable backbone; use --init scratch")
            log(f"initialised {n} backbone(s) from ImageNet")
        return model, [], {}
    path, sha = _init_weights_file(cfg)
    model, meta = load_weights(path, arch=cfg.model, expected_sha256=sha)
    if cfg.model_kwargs and cfg.model_kwargs != meta["kwargs"]:
        raise ValueError(
            f"--init weights {path} were built with {meta['kwargs']}, not the requested {cfg.model_kwargs}"
        )
    log(f"initialised from {path} (sha256 {meta['sha256'][:12]})")
    return model, _earlier_stages(meta), dict(meta.get("engine", {}))


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in LOG_FIELDS})


def _read_log(path: Path, upto_step: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The log's rows up to ``upto_step``; rows that cannot be read are dropped with a warning.

    The log only feeds the curves: an edited or damaged log.csv must not stop a resume.
    """
    if not path.is_file():
        return []
    rows, bad = [], 0
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                try:
                    step = int(str(r.get("step")))
                except ValueError:
                    bad += 1
                    continue
                if step <= upto_step:
                    rows.append(r)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        log(f"warning: cannot read {path} ({e}); its earlier rows are left out of the new log")
        return []
    if bad:
        log(f"warning: {bad} rows of {path} have no integer step (edited?); they are left out of the new log")
    return rows


def _plot(path: Path, rows: list[dict[str, Any]], log: Callable[[str], None]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        log("matplotlib is not installed: no curves.png")
        return
    def points(key: str) -> list[tuple[int, float]]:
        out = []
        for r in rows:
            try:
                out.append((int(r["step"]), float(r[key])))
            except (KeyError, TypeError, ValueError):  # empty, or edited by hand: not plotted
                pass
        return out

    tr, va = points("loss"), points("val_noc@90")
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    if tr:
        ax[0].plot(*zip(*tr), lw=1)
    ax[0].set(xlabel="iteration", ylabel="training loss", title="training")
    if va:
        ax[1].plot(*zip(*va), "o-")
    ax[1].set(xlabel="iteration", ylabel="NoC@90 (robot user, val objects)", title="validation (model selection)")
    fig.tight_layout()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _to_clicks(batch_clicks: torch.Tensor) -> list[list]:
    return [array_to_clicks(a) for a in batch_clicks.numpy()]


def _encode(clicks: list[list], shape: tuple[int, int], inputs) -> torch.Tensor:
    return torch.from_numpy(
        np.stack([encode_clicks(cl, shape, inputs.encoding, inputs.first_click) for cl in clicks])
    )


def _train_mode(model: torch.nn.Module, frozen_bn: bool) -> None:
    """Training mode; with ``frozen_bn`` BatchNorm layers keep normalising with their loaded statistics.

    Fine-tuning in batches of 8 crops otherwise drifts those statistics: forward passes alone
    (learning rate 1e-12) took the shipped ``hires`` validation score from 0.918 to 0.915 in 40 steps.
    """
    model.train()
    if frozen_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def _robot_step(prob: torch.Tensor, masks: np.ndarray, ignores: np.ndarray, clicks: list[list]) -> None:
    """Add the robot's next click for every sample (in place)."""
    pred = (prob[:, 0] >= 0.5).cpu().numpy()
    for b in range(len(clicks)):
        c = next_click(masks[b], pred[b], ignores[b], order=len(clicks[b]))
        if c is not None:
            clicks[b].append(c)


LOCK_NAME = ".train.lock"


@contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` while a run writes there.

    The lock (``flock`` on ``out/.train.lock``) dies with its process, so a killed run
    never leaves ``out`` locked. Where ``fcntl`` is missing (Windows) nothing is locked.

    Raises:
        RunDirError: another live process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    f = open(out / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the whole run
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            raise RunDirError(
                f"{out} is being written by another training run (process {pid}); "
                "wait for it to end, or stop it, before resuming it or starting one there"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


def _where(state: dict[str, Any] | None) -> tuple[int, float] | None:
    """How far a checkpoint's run had come: (step, elapsed seconds)."""
    return None if state is None else (int(state["step"]), float(state["elapsed"]))


def _check_belongs(ckpt_path: Path, state: dict[str, Any], cfg: TrainConfig, out: Path) -> None:
    """Raise unless the checkpoint was written by the run ``out/config.json`` describes.

    Raises:
        RunDirError: another model, or settings other than the budget, machine and folder.
    """
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise RunDirError(f"{ckpt_path} records no training settings: it does not belong to this run")
    if saved.get("model") != cfg.model:
        raise RunDirError(
            f"{ckpt_path} is a checkpoint of a {saved.get('model')!r} run, but {out / 'config.json'} "
            f"trains {cfg.model!r}: it does not belong to this run"
        )
    here = json.loads(json.dumps(cfg.to_dict(), default=str))
    try:  # as config.json is read: retired keys dropped, fields added since at their defaults
        saved = TrainConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError) as e:
        raise RunDirError(f"{ckpt_path} records unreadable training settings ({e}): it does not belong to this run") from None
    there = json.loads(json.dumps(saved, default=str))
    differ = sorted(k for k in set(here) | set(there) if k not in RESUME_MAY_CHANGE and here.get(k) != there.get(k))
    if differ:
        raise RunDirError(
            f"{ckpt_path} was written with other settings than {out / 'config.json'} "
            f"({', '.join(differ)}): it does not belong to this run"
        )


def _check_unchanged(out: Path, resume: bool, state: dict[str, Any] | None) -> None:
    """Raise if another run wrote ``out`` between this run's checks and its taking the lock.

    Raises:
        RunDirError: a new run finds a run's files, or a resume finds another checkpoint.
    """
    if not resume:
        if found := [n for n in RUN_FILES if (out / n).exists()]:
            raise RunDirError(f"{out} now holds {', '.join(found)}: another run wrote it meanwhile; choose another --out")
        return
    now = load_checkpoint(out / CHECKPOINT_NAME) if (out / CHECKPOINT_NAME).is_file() else None
    if _where(now) != _where(state):
        raise RunDirError(f"{out} was written by another run while this one loaded; run the command again")


def _optimizer(model: ClickSegModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; each parameter group's ``lr_mult`` scales ``cfg.lr`` (see ``lr_factor``).

    Pretrained backbone weights learn at ``lr * backbone_lr_mult``; a stem conv that was
    widened for click channels (zero-initialised) learns at the full rate.
    """
    backbone_ids = {
        id(p)
        for b in model.imagenet_backbones()
        for n, p in b.named_parameters()
        if not (n == "_conv_stem.weight" and getattr(b, "in_channels", 3) > 3)
    }
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in backbone_ids], "lr_mult": 1.0},
        {"params": [p for p in model.parameters() if id(p) in backbone_ids], "lr_mult": cfg.backbone_lr_mult},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay)


def _run_to_start(cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The validated config of the run in ``cfg.out`` and its checkpoint (None: from iteration 0).

    A resume takes the saved config, with this call's budget (where given) and machine
    settings; a new run refuses a folder that holds a run's files.
    """
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file; give a folder for the run")
    ckpt_path = out / CHECKPOINT_NAME
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file() and not (out / "config.json").is_file():
            raise RunDirError(f"nothing to resume: no {CHECKPOINT_NAME} in {out}")
        # the first checkpoint is written before any other output: files without it mean it was removed
        if not ckpt_path.is_file() and (trained := [n for n in RUN_FILES[2:] if (out / n).exists()]):
            raise RunDirError(
                f"{out} holds {', '.join(trained)} but no {CHECKPOINT_NAME}, so it cannot be resumed, "
                f"and starting it again would replace them; start a new run from its weights with "
                f"--init {out / 'best.safetensors'} (or last.safetensors) and another --out"
            )
        saved = TrainConfig.load(out / "config.json")
        same = [os.path.abspath(d) for d in cfg.train_dirs] == [os.path.abspath(d) for d in saved.train_dirs]
        if cfg.train_dirs and not same:
            raise RunDirError(
                f"--resume continues {out} with its saved data {saved.train_dirs}; "
                f"the given --data {cfg.train_dirs} differs (start a new run with another --out)"
            )
        for k in RESUME_BUDGET:  # a budget left out keeps the saved one
            if getattr(cfg, k) is not None:
                setattr(saved, k, getattr(cfg, k))
        for k in RESUME_MACHINE:  # where this part runs: this call's settings, saved or not
            setattr(saved, k, getattr(cfg, k))
        saved.out = cfg.out  # where the run is now (the folder may have been moved)
        cfg = saved
        if ckpt_path.is_file():  # else it was killed before its first checkpoint: start it again
            state = load_checkpoint(ckpt_path)
            _check_belongs(ckpt_path, state, cfg, out)
    elif found := [n for n in RUN_FILES if (out / n).exists()]:  # a run's, or the user's own files
        raise RunDirError(
            f"{out} already holds {', '.join(found)}: a training run (use --resume to continue it) "
            "or files a run would replace; choose another --out"
        )
    cfg.validate()
    cfg = cfg.resolved()
    return cfg, state


def _finished_message(out: Path, cfg: TrainConfig, state: dict[str, Any]) -> str:
    """What a resume of a finished run says: the budget that is spent and how to extend it."""
    spent = [f"--{k} {getattr(cfg, k):g}" for k, done in (
        ("iterations", int(state["step"]) >= (cfg.iterations or math.inf)),
        ("minutes", float(state["elapsed"]) >= 60.0 * (cfg.minutes or math.inf)),
    ) if done]
    return (
        f"{out} already finished at iteration {state['step']}: its {' and '.join(spent)} "
        f"{'are' if len(spent) > 1 else 'is'} spent; nothing to do (raise "
        f"{' and '.join(s.split()[0] for s in spent)} to continue it: a run stops at whichever "
        "of its --iterations and --minutes comes first)"
    )


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train a model as ``cfg`` says; returns a summary (steps, elapsed, best validation).

    Args:
        cfg: the configuration (validated here).
        resume: continue the run in ``cfg.out`` (its saved config is used; ``minutes``
            and ``iterations`` may be raised to extend it; ``device``, ``threads`` and
            ``num_workers`` are taken from ``cfg``, not the saved run, as they describe this
            machine; a finished run that is not extended is left untouched).
        log: progress printer (default: print to stderr from rank 0).
        stop_after: stop (with a checkpoint) after this many steps in this call (tests).

    Raises:
        RunDirError: ``cfg.out`` holds a run and ``resume`` is False, nothing to resume,
            or another live run is writing ``cfg.out``.
        ValueError: bad configuration or data (the message names the file).
    """
    with ExitStack() as locks:
        return _train(cfg, resume, log, stop_after, locks)


def _train(
    cfg: TrainConfig,
    resume: bool,
    log: Callable[[str], None] | None,
    stop_after: int | None,
    locks: ExitStack,
) -> dict[str, Any]:
    """``train``'s body; rank 0 enters the run folder's lock into ``locks``."""
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT_NAME
    cfg, state = _run_to_start(cfg, resume)
    if state is not None and _already_finished(cfg, state):  # never re-validate or rewrite files
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(_finished_message(out, cfg, state))
        return {
            "steps": int(state["step"]), "elapsed_s": float(state["elapsed"]), "best": state.get("best"),
            "finished": True, "interrupted": False, "out": str(out),
        }

    from ..engine.device import cpu_has_native_bf16, pick_device

    device = pick_device(None if cfg.device == "auto" else cfg.device)
    dist, device = _init_distributed(device)
    if log is None:
        def log(msg: str) -> None:
            if dist.main:
                print(msg, file=sys.stderr, flush=True)
    if resume and state is None:
        log(f"{out} stopped before its first checkpoint: starting its saved run from iteration 0")
    threads = cfg.threads or max(1, available_cpus() // dist.world)
    if cfg.bf16 and device.type == "cpu" and not cpu_has_native_bf16():
        log("warning: this CPU has no native bfloat16; bf16 autocast will be much slower than fp32")
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    # the model first: bad --init weights fail before the (slow) data loading
    if state is not None:  # the checkpoint replaces the weights: skip the init
        try:
            model = create_model(cfg.model, **state["arch_kwargs"])
        except (KeyError, TypeError, ValueError) as e:
            raise RunDirError(f"{ckpt_path}: cannot rebuild its {cfg.model} model ({e})") from None
        earlier_stages = list(state.get("earlier_stages", []))
        engine = dict(state.get("engine", {}))
    else:
        model, earlier_stages, engine = _build_model(cfg, log)
    model = model.to(device)
    # data next: a broken folder fails before anything is written
    def folders(dirs: list[str]) -> list[FolderDataset]:
        return [FolderDataset(d, ignore_value=cfg.ignore_value, min_object_px=cfg.min_object_px, progress=log)
                for d in dirs]

    datasets, val_sets = folders(cfg.train_dirs), folders(cfg.val_dirs)
    for ds in datasets + val_sets:
        desc = ds.describe()
        log(f"{desc['path']}: {desc['images']} images, {desc['objects']} objects ({desc['kind']})")
    data_prints = {"train": [ds.fingerprint() for ds in datasets], "val": [ds.fingerprint() for ds in val_sets]}
    if state is not None and (then := state.get("data_fingerprints")) is not None:
        for kind, sets in (("train", datasets), ("val", val_sets)):
            changed = [str(ds.root) for ds, a, b in zip(sets, then.get(kind, []), data_prints[kind]) if a != b]
            if changed:
                what = ("the rest of the run trains on what they hold now" if kind == "train" else
                        "validation scores before and after the resume are not comparable, and best.safetensors "
                        "was chosen on the old files")
                log(f"warning: the files in {', '.join(changed)} changed since the run's last checkpoint: {what}")
    if shared := sorted({str(v.root) for v in val_sets for d in datasets if same_file(v.root, d.root)}):
        log(f"warning: --val {', '.join(shared)} is also training data: best.safetensors is then chosen on "
            "objects the model trains on; hold some images out in a folder of their own")

    inputs = model.inputs
    normalization = {k: tuple(v) for k, v in model.normalization.items()}
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    optimizer = _optimizer(model, cfg)
    loss_fn = get_loss(cfg.loss, cfg.model)

    if dist.main:  # before anything in out changes: a second process stops here
        out.mkdir(parents=True, exist_ok=True)
        locks.enter_context(_run_lock(out))
        _check_unchanged(out, resume, state)
    step, elapsed_before, best = 0, 0.0, {"step": -1, "metrics": {}}
    rows: list[dict[str, Any]] = []
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, elapsed_before = int(state["step"]), float(state["elapsed"])
            torch.set_rng_state(state["rng"]["torch"])
            random.setstate(_to_tuple(state["rng"]["python"]))
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunDirError(f"{ckpt_path}: does not match this run's model or is damaged ({first})") from None
        best = state.get("best", best)
        old_best = out / "best.safetensors"
        if "score" in best and "noc@90" not in best and dist.main and old_best.is_file():
            # chosen by the crop validation of older versions: kept, as the new one may choose otherwise
            old_best.rename(out / "best_crop_validation.safetensors")
            log(f"{old_best} was chosen by the older crop validation: kept as best_crop_validation.safetensors")
        rows = _read_log(out / "log.csv", step, log)
        if (then := state.get("processes")) is not None and int(then) != dist.world:
            log(f"warning: this run was trained with {then} process(es) and resumes with {dist.world}: each step "
                f"now takes {cfg.batch_size} x {dist.world} samples instead of {cfg.batch_size} x {then}, "
                "and the samples drawn from here on follow the new count (some are seen again, some skipped)")
        log(f"resuming {out} at iteration {step} ({_fmt_time(elapsed_before)} done)")
    if dist.main:  # the folder was made before the lock was taken
        cfg.save(out / "config.json")

    train_model: torch.nn.Module = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    aug = AugmentConfig(crop_size=cfg.crop_size, object_scale=tuple(cfg.object_scale), max_upscale=cfg.max_upscale)
    click_cfg = ClickSamplingConfig(max_positive=cfg.max_positive, max_negative=cfg.max_negative)
    samples = ClickSamples(
        datasets, aug, click_cfg, inputs.encoding, inputs.first_click, normalization, cfg.seed, cfg.balance
    )
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=cfg.batch_size,
        sampler=GlobalIndexSampler(step, cfg.batch_size, dist.rank, dist.world),
        num_workers=cfg.num_workers,
        persistent_workers=False,
        worker_init_fn=_worker_ignores_stop_signals,
        pin_memory=device.type == "cuda",
    )
    vsets = validation_sets(val_sets, cfg.val_objects, cfg.seed) if val_sets and dist.main else []
    if vsets:
        log(f"validation: {sum(len(v.items) for v in vsets)} objects on full images, robot user through the "
            f"engine, up to {cfg.val_clicks} clicks each (model selection)")

    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.bf16 else nullcontext
    data_desc = [ds.describe() for ds in datasets]
    hardware = _hardware(device, threads, dist.world)

    def training_meta(metrics_step: int) -> dict[str, Any]:
        return {
            "config": cfg.to_dict(),
            "data": data_desc,
            "val_data": [ds.describe() for ds in val_sets],
            "iterations": metrics_step,
            "samples_seen": metrics_step * cfg.batch_size * dist.world,
            "wall_time_s": round(elapsed_now(), 1),
            "hardware": hardware,
            # the stages the init weights went through: the weights describe their whole history
            "earlier_stages": earlier_stages,
        }

    t_start = time.monotonic()

    def elapsed_now() -> float:
        return elapsed_before + time.monotonic() - t_start

    def checkpoint(finished: bool = False) -> None:
        if not dist.main:
            return
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(),
            "arch_kwargs": dict(model.arch_kwargs),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "elapsed": elapsed_now(),
            "best": best,
            "rng": {"torch": torch.get_rng_state(), "python": _to_list(random.getstate())},
            "config": cfg.to_dict(),
            "earlier_stages": earlier_stages,
            "engine": engine,
            "finished": finished,  # resuming a finished run is a no-op
            "data_fingerprints": data_prints,  # a resume notices folders whose files changed
            "processes": dist.world,  # and another number of processes
        })
        _write_log(out / "log.csv", rows)
        from ..weights import save_weights

        save_weights(model, out / "last.safetensors", training=training_meta(step), metrics=best["metrics"],
                     engine=engine)
        _plot(out / "curves.png", rows, log)

    last_val = {"step": -1}

    def run_validation() -> None:
        nonlocal best
        if not vsets:
            return
        last_val["step"] = step
        t0 = time.monotonic()
        res = validate(model, vsets, engine=engine, normalization=normalization, device=device,
                       max_clicks=cfg.val_clicks)
        _train_mode(model, cfg.frozen_bn)
        row = {"step": step, "elapsed_s": round(elapsed_now(), 1)}
        for k in ("noc@90", "noc@85", "nof@90", "iou@1", "iou@3", "iou@5", "auc"):
            if k in res:
                row[f"val_{k}"] = round(res[k], 4)
        rows.append(row)
        msg = " ".join(f"{k} {res[k]:.3f}" for k in ("noc@90", "noc@85", "iou@1", "auc")) + " (" + ", ".join(
            f"{k.split(' ', 1)[1]} {v:.2f}" for k, v in res.items() if k.startswith("noc@90 ")) + ")"
        improved = improves(res, best)
        log(f"[val] iteration {step}: {msg} ({time.monotonic() - t0:.0f} s){' *best*' if improved else ''}")
        if improved:
            metrics = {f"val_{k}": v for k, v in res.items()}
            metrics["note"] = (
                f"model-selection scores: {int(res['objects'])} val objects, robot user through the engine, "
                f"{cfg.val_clicks} clicks, stop at IoU 0.90; a sample too small to report (use evaluate)"
            )
            best = {"noc@90": res["noc@90"], "auc": res["auc"], "step": step, "metrics": metrics}
            from ..weights import save_weights

            save_weights(model, out / "best.safetensors", training=training_meta(step), metrics=metrics, engine=engine)

    def sync_progress() -> tuple[float, float, bool]:
        """Rank 0's clock and the progress it gives; with several processes also whether any
        of them was asked to stop (all then stop at this same step)."""
        e, stop_all = elapsed_now(), stop_requested
        if dist.world > 1:
            import torch.distributed as tdist

            # the maximum of rank 0's clock (the others give 0) and of every rank's stop flag
            t = torch.tensor([e if dist.main else 0.0, float(stop_requested)], dtype=torch.float64)
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
            e, stop_all = float(t[0]), bool(t[1])  # a signal during the all-reduce stays pending
        return e, _progress(cfg, step, e), stop_all

    def log_window() -> None:
        """Log the mean loss and speed of the steps since the last log line."""
        nonlocal win_loss, win_n, win_t0, win_steps
        sps = win_steps * cfg.batch_size * dist.world / max(time.monotonic() - win_t0, 1e-9)
        e = elapsed_now()
        p = _progress(cfg, step, e)
        eta = (1 - p) / p * e if p > 0 else 0.0
        rows.append({
            "step": step, "elapsed_s": round(e, 1), "lr": f"{optimizer.param_groups[0]['lr']:.3g}",
            "loss": round(win_loss / win_n, 5), "samples_per_s": round(sps, 3),
        })
        log(
            f"iteration {step} | loss {win_loss / win_n:.4f} | {sps:.2f} samples/s | "
            f"lr {optimizer.param_groups[0]['lr']:.2e} | elapsed {_fmt_time(e)} | eta {_fmt_time(eta)}"
        )
        win_loss, win_n, win_t0, win_steps = 0.0, 0, time.monotonic(), 0

    stop_requested = in_step = False

    def on_stop_signal(signum, frame):  # noqa: ARG001
        nonlocal stop_requested
        # finish a step: a checkpoint never holds half a step (weights ahead of the counter); with
        # several processes every one stops at the next step together (see sync_progress), as one
        # leaving alone would leave the others waiting for it in a collective
        if in_step or dist.world > 1:
            stop_requested = True
        else:
            raise _Stop()

    stop_signals = (signal.SIGTERM, signal.SIGINT)
    old_handlers = {sig: signal.signal(sig, on_stop_signal) for sig in stop_signals} if _main_thread() else {}
    _train_mode(model, cfg.frozen_bn)
    it = iter(loader)
    # checkpoint times are read from rank 0's broadcast clock: every rank decides alike
    last_ckpt = elapsed_before
    win_loss, win_n, win_t0, win_steps = 0.0, 0, time.monotonic(), 0
    steps_this_call = 0
    interrupted = peer_lost = False
    log(
        f"training {cfg.model} ({cfg.loss} loss, {cfg.click_schedule} clicks) on {device.type}"
        f" x{dist.world}, {threads} threads, batch {cfg.batch_size}, crop {cfg.crop_size}"
    )
    try:
        if step == 0:
            checkpoint()  # at once: a run killed from here on can be resumed
        if step == 0 and cfg.init not in ("imagenet", "scratch"):
            # the weights fine-tuning starts from are a candidate too: best.safetensors is never worse
            if dist.main:
                run_validation()
            _barrier(dist)
        validated = {int(r["step"]) for r in rows if r.get("val_noc@90") not in (None, "")}
        if step > 0 and cfg.val_dirs and cfg.val_every and step % cfg.val_every == 0 and step not in validated:
            # resumed where a validation was due, or cut short: those weights are a candidate too
            if dist.main:
                run_validation()
            _barrier(dist)
        while True:
            try:
                elapsed, progress, stop_all = sync_progress()
            except RuntimeError as e:  # another process died (gloo/nccl): keep what this one has
                if dist.world == 1 or not _peer_lost(e):
                    raise
                peer_lost = True
                log(f"lost contact with another process ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
                raise _Stop() from None
            if stop_all:
                raise _Stop()
            if progress >= 1.0 or (stop_after is not None and steps_this_call >= stop_after):
                break
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * g["lr_mult"] * lr_factor(cfg, step, progress)
            batch = next(it)
            in_step = True
            stepped = False
            try:
                loss_value = _train_step(cfg, train_model, model, inputs, batch, loss_fn, optimizer, device, amp,
                                         step, dist)
                stepped = True
                loss_value = _mean_over_ranks(loss_value, dist)  # the log's loss is every rank's
            except RuntimeError as e:  # a process that died in a collective; anything else is a bug
                if dist.world == 1 or not _peer_lost(e):
                    raise
                peer_lost = True
                step += stepped  # the checkpoint's counter matches its weights
                log(f"lost contact with another process in iteration {step + 1 - stepped} "
                    f"({str(e).splitlines()[0] if str(e) else type(e).__name__})")
                raise _Stop() from None
            step += 1
            steps_this_call += 1
            win_loss += loss_value
            win_n += 1
            win_steps += 1
            in_step = False
            if stop_requested and dist.world == 1:
                raise _Stop()
            if step % cfg.log_every == 0 and dist.main:
                log_window()
            paused = time.monotonic()
            if cfg.val_every and step % cfg.val_every == 0:
                if dist.main:
                    run_validation()
                _barrier(dist)
            if elapsed - last_ckpt >= 60 * cfg.checkpoint_minutes:
                checkpoint()
                last_ckpt = elapsed
                _barrier(dist)
            win_t0 += time.monotonic() - paused  # the speed logged is the training's own
    except (KeyboardInterrupt, _Stop):
        interrupted = True
        log(f"interrupted at iteration {step}: writing a checkpoint (continue with --resume)")
    try:  # the stop signals stay caught until the last checkpoint is written
        done = not interrupted and (stop_after is None or steps_this_call < stop_after)
        if win_n and dist.main:  # the steps since the last log line (a short run has no other)
            log_window()
        if done and vsets and last_val["step"] != step:
            try:
                run_validation()
            except (KeyboardInterrupt, _Stop):  # the steps are kept; --resume validates them
                interrupted, done = True, False
                log(f"interrupted in the last validation: writing a checkpoint (--resume validates iteration {step})")
        in_step = True  # a signal from here on waits for the checkpoint
        checkpoint(finished=done)
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    if not peer_lost:
        _barrier(dist)
    summary = {
        "steps": step,
        "elapsed_s": elapsed_now(),
        "best": best,
        "finished": done,
        "interrupted": interrupted,
        "out": str(out),
    }
    if dist.main:
        best_msg = (
            f"best validation NoC@90 {best['noc@90']:.2f} at iteration {best['step']}"
            if "noc@90" in best
            else "no validation finished" if vsets else "no validation (give --val DIR to keep best.safetensors)"
        )
        log(f"{'finished' if done else 'stopped'} at iteration {step} after {_fmt_time(elapsed_now())}; "
            f"{best_msg}; files in {out}")
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _train_step(cfg, train_model, model, inputs, batch, loss_fn, optimizer, device, amp, step, dist) -> float:
    """One optimisation step on a batch; returns the loss value."""
    images = batch["image"].to(device, non_blocking=True)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    gt = batch["mask"].to(device)[:, None].float()
    ignore = batch["ignore"].to(device)[:, None]
    # the robot clicks neither on ignored pixels nor in a crop's padding, where no user could
    masks_np, ign_np = batch["mask"].numpy(), batch["no_click"].numpy()
    shape = tuple(images.shape[-2:])
    rng = np.random.default_rng([cfg.seed, step, 1])
    optimizer.zero_grad(set_to_none=True)
    prev = torch.zeros((images.shape[0], 1, *shape), device=device)

    if cfg.click_schedule == "click_by_click":
        clicks = [cl[:1] for cl in _to_clicks(batch["clicks"])]  # the first click, then the robot
        total = 0.0
        n = cfg.click_steps
        for k in range(n):
            maps = _encode(clicks, shape, inputs).to(device)
            sync = k == n - 1 or dist.world == 1
            ctx = nullcontext() if sync else train_model.no_sync()
            with ctx:
                with amp():
                    out = train_model(images, maps, prev.detach() if inputs.prev_mask else None)
                loss = loss_fn(out, gt, ignore, clicks)
                _check_finite(loss, step)
                (loss / n).backward()
            total += float(loss.detach()) / n
            if k < n - 1:
                prob = torch.sigmoid(out["logits"].detach().float())
                prev = prob
                _robot_step(prob, masks_np, ign_np, clicks)
        optimizer.step()
        return total

    clicks = _to_clicks(batch["clicks"])
    maps = batch["click_maps"].to(device)
    n_extra = int(rng.integers(0, cfg.max_iter_clicks + 1))
    if n_extra:
        model.eval()
        with torch.no_grad():
            feats = None
            if model.caches_image_features:  # late fusion: the image stream runs once
                with amp():
                    feats = model.encode_image(images)
            for _ in range(n_extra):
                with amp():
                    out = model(images, maps, prev if inputs.prev_mask else None, image_feats=feats)
                prev = torch.sigmoid(out["logits"].float())
                _robot_step(prev, masks_np, ign_np, clicks)
                maps = _encode(clicks, shape, inputs).to(device)
        _train_mode(model, cfg.frozen_bn)
    with amp():
        out = train_model(images, maps, prev if inputs.prev_mask else None)
    loss = loss_fn(out, gt, ignore, clicks)
    _check_finite(loss, step)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class NonFiniteLoss(FloatingPointError, ValueError):
    """The loss became NaN or infinite: the run stops (its last checkpoint is kept)."""


def _check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"non-finite loss at iteration {step}; lower --lr or disable bf16")


def _peer_lost(error: BaseException) -> bool:
    """Whether ``error`` says another process of the run is gone (a collective failed), rather
    than a bug or an out-of-memory error of this one."""
    import torch.distributed as tdist

    if isinstance(error, getattr(tdist, "DistError", ())):
        return True
    text = str(error).lower()
    return any(k in text for k in ("gloo", "nccl", "connection closed", "connection reset", "broken pipe",
                                   "timed out", "socket"))


def _mean_over_ranks(value: float, dist: _Dist) -> float:
    """The mean of one number over the ranks (the number itself in a single process)."""
    if dist.world == 1:
        return value
    import torch.distributed as tdist

    t = torch.tensor([value], dtype=torch.float64)
    tdist.all_reduce(t)
    return float(t.item()) / dist.world


def _barrier(dist: _Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def _worker_ignores_stop_signals(worker_id: int) -> None:  # noqa: ARG001
    """Data workers leave Ctrl-C and SIGTERM to the trainer, which stops them after its step
    (a Ctrl-C reaches the whole process group; a worker killed by it fails the step)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _to_list(x):
    return [_to_list(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x
