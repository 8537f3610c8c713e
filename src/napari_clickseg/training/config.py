"""The training configuration: one dataclass, saved as JSON beside every checkpoint."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "CLICK_SCHEDULES", "DEFAULT_SCHEDULE"]

#: "iterative": random initial clicks, then 0..max_iter_clicks robot clicks made
#: without gradients (RITM), one loss. "click_by_click": the "99 %" scheme: first
#: click, then robot clicks one at a time, a loss after every click (gradients
#: through each prediction, the previous mask detached), one optimizer step.
CLICK_SCHEDULES = ("iterative", "click_by_click")
DEFAULT_SCHEDULE = {"hires": "click_by_click"}
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    ``None`` fields are resolved by ``resolved()`` from the model and init
    (loss, click schedule, learning rate, backbone lr factor, threads).
    """

    model: str = "early"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train_dirs: list[str] = field(default_factory=list)
    val_dirs: list[str] = field(default_factory=list)
    out: str = "runs/run"
    init: str = "default"  # "default" | "imagenet" | "scratch" | path to .safetensors
    minutes: float | None = None
    iterations: int | None = None
    batch_size: int = 8
    crop_size: int = 320
    lr: float | None = None  # 5e-4 from ImageNet/scratch, 1e-4 when fine-tuning weights
    weight_decay: float = 1e-4
    backbone_lr_mult: float | None = None  # 0.1 from ImageNet (RITM), else 1.0
    lr_schedule: str = "cosine"
    warmup_iterations: int = 50
    loss: str | None = None
    click_schedule: str | None = None
    max_iter_clicks: int = 3  # "iterative": extra robot clicks, 0..N per batch
    click_steps: int = 4  # "click_by_click": clicks (losses) per image
    max_positive: int = 10
    max_negative: int = 10
    object_scale: tuple[float, float] = (0.15, 0.8)
    max_upscale: float = 3.0
    balance: str = "dataset"  # "dataset": each folder equally often; "object": every object equally
    ignore_value: int | None = 128
    min_object_px: int = 30
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = True
    threads: int | None = None
    num_workers: int = 0
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    val_every: int = 100
    val_objects: int = 64
    val_clicks: int = 5
    val_batch_size: int = 8

    def validate(self) -> None:
        """Raise ``ValueError`` with a clear message for inconsistent settings."""
        from ..models import list_models
        from .losses import LOSSES

        if self.model not in list_models():
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(list_models())}")
        if not self.train_dirs:
            raise ValueError("no training data: give at least one --data DIR")
        if self.minutes is None and self.iterations is None:
            raise ValueError("give --minutes and/or --iterations")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError("--minutes must be positive")
        if self.iterations is not None and self.iterations <= 0:
            raise ValueError("--iterations must be positive")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.crop_size < 32 or self.crop_size % 32:
            raise ValueError(f"--crop-size must be a multiple of 32 (>= 32), got {self.crop_size}")
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(sorted(LOSSES))}")
        if self.click_schedule is not None and self.click_schedule not in CLICK_SCHEDULES:
            raise ValueError(f"unknown click schedule {self.click_schedule!r}; valid: {', '.join(CLICK_SCHEDULES)}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.balance not in ("dataset", "object"):
            raise ValueError(f"balance must be 'dataset' or 'object', got {self.balance!r}")
        lo, hi = self.object_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"object_scale must satisfy 0 < lo <= hi <= 1, got {self.object_scale}")
        if self.max_positive < 1 or self.max_negative < 0:
            raise ValueError("max_positive must be >= 1 and max_negative >= 0")

    def resolved(self) -> TrainConfig:
        """A copy with model-dependent defaults filled in."""
        from .losses import DEFAULT_LOSS

        finetune = self.init not in ("imagenet", "scratch")
        return replace(
            self,
            loss=self.loss or DEFAULT_LOSS.get(self.model, "balanced_bce"),
            click_schedule=self.click_schedule or DEFAULT_SCHEDULE.get(self.model, "iterative"),
            lr=self.lr if self.lr is not None else (1e-4 if finetune else 5e-4),
            backbone_lr_mult=(
                self.backbone_lr_mult
                if self.backbone_lr_mult is not None
                else (0.1 if self.init == "imagenet" else 1.0)
            ),
            object_scale=tuple(self.object_scale),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        d = asdict(self)
        d["object_scale"] = list(self.object_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        d = dict(d)
        if "object_scale" in d:
            d["object_scale"] = tuple(d["object_scale"])
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (atomically)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a config written by ``save``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read training config {path}: {e}") from None
