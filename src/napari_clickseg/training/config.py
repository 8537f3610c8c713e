"""The training configuration: one dataclass, saved as JSON beside every checkpoint."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..data.io import MIN_OBJECT_PX
from ..files import replacing

__all__ = ["TrainConfig", "CLICK_SCHEDULES", "DEFAULT_SCHEDULE", "option_name", "resolve_model_name"]

#: "iterative": random initial clicks, then 0..max_iter_clicks robot clicks made
#: without gradients (RITM), one loss. "click_by_click": the "99 %" scheme: first
#: click, then robot clicks one at a time, a loss after every click (gradients
#: through each prediction, the previous mask detached), one optimizer step.
CLICK_SCHEDULES = ("iterative", "click_by_click")
DEFAULT_SCHEDULE = {"hires": "click_by_click"}
SCHEDULES = ("cosine", "step", "constant")

#: numeric fields: (integer?, lower bound, bound excluded?, None allowed?); numbers must be finite
_NUMBERS: dict[str, tuple[bool, float, bool, bool]] = {
    "minutes": (False, 0, True, True),
    "iterations": (True, 1, False, True),
    "batch_size": (True, 1, False, False),
    "crop_size": (True, 32, False, False),
    "lr": (False, 0, True, True),
    "weight_decay": (False, 0, False, False),
    "backbone_lr_mult": (False, 0, False, True),
    "warmup_iterations": (True, 0, False, False),
    "max_iter_clicks": (True, 0, False, False),
    "click_steps": (True, 1, False, False),
    "max_positive": (True, 1, False, False),
    "max_negative": (True, 0, False, False),
    "max_upscale": (False, 0, True, False),
    "ignore_value": (True, 0, False, True),
    "min_object_px": (True, 0, False, False),
    "seed": (True, 0, False, False),
    "threads": (True, 1, False, True),
    "num_workers": (True, 0, False, False),
    "checkpoint_minutes": (False, 0, False, False),  # 0: after every iteration
    "log_every": (True, 1, False, False),
    "val_every": (True, 0, False, False),
    "val_objects": (True, 1, False, False),
    "val_clicks": (True, 1, False, False),
}
#: fields of older runs' configs that no longer do anything (read, then dropped)
_RETIRED = {"val_batch_size"}  # the crop validation's batch; validation now runs the engine
#: command-line spellings of fields whose option name differs from ``--field-name``
_CLI_NAMES = {"train_dirs": "--data", "val_dirs": "--val", "num_workers": "--workers"}
_CLI_FIELDS = {
    "model", "init", "minutes", "iterations", "out", "batch_size", "crop_size", "lr", "loss",
    "click_schedule", "seed", "device", "bf16", "threads", "val_every", "val_objects",
}


def _as_dict(x: Any) -> dict:
    """``x`` if it is a dict, else an empty one (metadata read from a file may be anything)."""
    return x if isinstance(x, dict) else {}


def recorded_recipe(init: str, model: str) -> dict[str, str]:
    """The loss and click schedule that the weights ``init`` names were last trained with.

    Fine-tuning continues with them unless told otherwise. For an averaged file, the
    members' recipe when they agree. Empty for ImageNet or scratch, a file that records
    none, or one that cannot be read (the trainer reports that when it loads it).
    """
    if init in ("imagenet", "scratch"):
        return {}
    from ..weights import WeightsError, read_metadata, resolve_weights
    from .losses import LOSSES

    try:
        meta = read_metadata(resolve_weights(model if init == "default" else init)[0])
    except (WeightsError, OSError):
        return {}
    training = _as_dict(meta.get("training"))
    members = training.get("averaged") if isinstance(training.get("averaged"), list) else []
    configs = [_as_dict(_as_dict(m).get("training")).get("config") for m in members] or [training.get("config")]
    known = {"loss": set(LOSSES), "click_schedule": set(CLICK_SCHEDULES)}
    recipe = {}
    for key, valid in known.items():
        values = {c.get(key) if isinstance(c, dict) else None for c in configs}
        if len(values) == 1 and (value := values.pop()) in valid:
            recipe[key] = value
    return recipe


def resolve_model_name(name: str) -> str:
    """``name`` itself, or for "default" the model the shipped weights manifest names default.

    Raises:
        ValueError: "default" but no default model is shipped.
    """
    if name != "default":
        return name
    from ..weights import shipped_manifest

    default = shipped_manifest().get("default")
    if not isinstance(default, str) or not default:
        raise ValueError("--model default: no default model is shipped; name an architecture with --model")
    return default


def option_name(name: str) -> str:
    """How the user sets a field: ``--batch-size`` for command-line options, else the field name."""
    if name in _CLI_NAMES:
        return _CLI_NAMES[name]
    return "--" + name.replace("_", "-") if name in _CLI_FIELDS else name


def _is_number(value: Any, integer: bool = False) -> bool:
    """A finite int (or float unless ``integer``); bools are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return False
    return integer or math.isfinite(value)


def _number(name: str, value: Any, integer: bool, low: float, strict: bool, optional: bool) -> None:
    """Raise ``ValueError`` unless ``value`` is a number of the kind and range given."""
    if value is None and optional:
        return
    if not (_is_number(value, integer) and (value > low if strict else value >= low)):
        kind = "an integer" if integer else "a finite number"
        unset = " (or unset)" if optional else ""
        raise ValueError(f"{option_name(name)} must be {kind} {'>' if strict else '>='} {low}{unset}, got {value!r}")


def _choice(name: str, value: Any, valid: Sequence[str], optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``valid`` (or None when optional)."""
    if (value is None and optional) or (isinstance(value, str) and value in valid):
        return
    raise ValueError(f"{option_name(name)} must be one of {', '.join(valid)}; got {value!r}")


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    ``None`` fields are resolved by ``resolved()`` from the model and init
    (loss, click schedule, learning rate, backbone lr factor, threads): loss and
    click schedule are those the init weights record (``recorded_recipe``), else
    the model's paper's.
    """

    model: str = "default"  # a registered name, or "default": the shipped default model (manifest)
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
    frozen_bn: bool | None = None  # BatchNorm statistics kept as loaded; default: when fine-tuning
    max_positive: int = 10
    max_negative: int = 10
    object_scale: tuple[float, float] = (0.15, 0.8)
    max_upscale: float = 3.0
    balance: str = "dataset"  # "dataset": each folder equally often; "object": every object equally
    ignore_value: int | None = 128
    min_object_px: int = MIN_OBJECT_PX
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
    val_clicks: int = 20  # 5 ranked a run that degrades late clicks above the shipped weights

    def validate(self) -> None:
        """Raise ``ValueError`` with a clear message for inconsistent settings."""
        from ..models import list_models
        from .losses import LOSSES

        _choice("model", self.model, [*list_models(), "default"])
        resolve_model_name(self.model)  # "default" needs a shipped default
        if not self.train_dirs:
            raise ValueError("no training data: give at least one --data DIR")
        for name in ("train_dirs", "val_dirs"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{option_name(name)} must be a list of folders, got {value!r}")
        for name in ("out", "init", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{option_name(name)} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("bf16", "channels_last", "frozen_bn"):
            if not isinstance(getattr(self, name), bool) and not (name == "frozen_bn" and self.frozen_bn is None):
                raise ValueError(f"{option_name(name)} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a JSON object, got {self.model_kwargs!r}")
        if self.minutes is None and self.iterations is None:
            raise ValueError("give --minutes and/or --iterations")
        for name, rule in _NUMBERS.items():
            _number(name, getattr(self, name), *rule)
        if self.crop_size % 32:
            raise ValueError(f"--crop-size must be a multiple of 32 (>= 32), got {self.crop_size}")
        bn_trains = self.frozen_bn is False or (self.frozen_bn is None and self.init in ("imagenet", "scratch"))
        if self.batch_size < 2 and bn_trains:
            # pooled 1x1 branches (hires, multi_stage, fca) would normalise one value per channel
            raise ValueError(
                "--batch-size must be at least 2 when BatchNorm statistics train (--init imagenet or "
                "scratch, or --set frozen_bn=false); fine-tuning weights with frozen statistics takes 1"
            )
        _choice("loss", self.loss, sorted(LOSSES), optional=True)
        _choice("click_schedule", self.click_schedule, CLICK_SCHEDULES, optional=True)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("balance", self.balance, ("dataset", "object"))
        scale = self.object_scale
        if not (
            isinstance(scale, list | tuple) and len(scale) == 2
            and all(_is_number(v) for v in scale) and 0 < scale[0] <= scale[1] <= 1
        ):
            raise ValueError(f"object_scale must be a pair [lo, hi] with 0 < lo <= hi <= 1, got {scale!r}")

    def resolved(self) -> TrainConfig:
        """A copy with model-dependent defaults filled in."""
        from .losses import DEFAULT_LOSS

        finetune = self.init not in ("imagenet", "scratch")
        model = resolve_model_name(self.model)
        # fine-tuning continues the recipe the weights were trained with; a new model its paper's
        recipe = recorded_recipe(self.init, model) if self.loss is None or self.click_schedule is None else {}
        return replace(
            self,
            model=model,
            # absolute, so that config.json (and --resume from another folder) finds the data
            train_dirs=[os.path.abspath(d) for d in self.train_dirs],
            val_dirs=[os.path.abspath(d) for d in self.val_dirs],
            loss=self.loss or recipe.get("loss") or DEFAULT_LOSS.get(model, "balanced_bce"),
            click_schedule=self.click_schedule or recipe.get("click_schedule") or DEFAULT_SCHEDULE.get(model, "iterative"),
            lr=self.lr if self.lr is not None else (1e-4 if finetune else 5e-4),
            backbone_lr_mult=(
                self.backbone_lr_mult
                if self.backbone_lr_mult is not None
                else (0.1 if self.init == "imagenet" else 1.0)
            ),
            frozen_bn=self.frozen_bn if self.frozen_bn is not None else finetune,
            object_scale=tuple(self.object_scale),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        d = asdict(self)
        d["object_scale"] = list(self.object_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError`` (retired ones are dropped)."""
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k not in _RETIRED}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("object_scale"), list):  # anything else is reported by validate()
            d["object_scale"] = tuple(d["object_scale"])
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (atomically)."""
        with replacing(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a config written by ``save``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read training config {path}: {e}") from None
