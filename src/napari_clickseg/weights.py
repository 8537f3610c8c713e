"""Self-describing weights: safetensors files whose metadata say how to rebuild the model.

A weights file stores the state dict (fp16 or fp32) and one metadata entry,
``napari_clickseg``, holding JSON with:

- ``arch``: the registry name; ``kwargs``: the constructor kwargs,
- ``normalization``: mean/std the model expects on images scaled to [0, 1],
- ``training``: how the weights were made (config, data, iterations, wall time),
- ``metrics``: scores per PROTOCOL.md, where measured,
- ``engine`` (optional): Predictor settings that suit these weights (``ENGINE_SETTINGS``),
  applied by ``Predictor.from_pretrained`` unless its caller overrides them,
- ``trained``: False for a random initialisation (refused by ``load_weights``
  unless ``allow_untrained``).

Shipped weights live in the repository's ``weights/`` folder (installed as
``napari_clickseg/_weights``); ``weights/manifest.json`` maps model names to
files with their sha256, and names the ``default`` model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checks import ENGINE_LIMITS, check_number
from .files import replacing

if TYPE_CHECKING:
    from .models.base import ClickSegModel

META_KEY = "napari_clickseg"
FORMAT_VERSION = 1
ENV_WEIGHTS_DIR = "NAPARI_CLICKSEG_WEIGHTS"
#: Predictor settings a weights file may carry (``engine``), checked against the Predictor's own
#: bounds (``checks.ENGINE_LIMITS``) so that any value a Predictor runs with can be saved
ENGINE_SETTINGS = ("min_crop_size", "max_upscale", "expansion")


class WeightsError(ValueError):
    """A weights file is missing, corrupt, untrained or does not fit the model."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_engine_settings(engine: Any, where: str = "engine settings") -> dict[str, Any]:
    """``engine`` validated against ``ENGINE_SETTINGS``, values cast to their types.

    Raises:
        WeightsError: not a dict, an unknown name, a wrong type or a value out of range.
    """
    if not isinstance(engine, dict):
        raise WeightsError(f"{where}: expected a dict of Predictor settings, got {type(engine).__name__}")
    out: dict[str, Any] = {}
    for key, value in engine.items():
        if key not in ENGINE_SETTINGS:
            raise WeightsError(f"{where}: unknown setting {key!r}; known: {', '.join(ENGINE_SETTINGS)}")
        try:
            out[key] = check_number(key, value, *ENGINE_LIMITS[key])
        except ValueError as e:
            raise WeightsError(f"{where}: {e}") from None
    return out


def check_engine_changes(changes: Any, where: str = "engine settings") -> dict[str, Any]:
    """``changes`` to a file's engine settings validated: known names, values as
    ``check_engine_settings`` wants them or None (remove that setting).

    Raises:
        WeightsError: not a dict, an unknown name (None values included) or a bad value.
    """
    if isinstance(changes, dict) and (unknown := [k for k in changes if k not in ENGINE_SETTINGS]):
        raise WeightsError(f"{where}: unknown setting {unknown[0]!r}; known: {', '.join(ENGINE_SETTINGS)}")
    kept = check_engine_settings({k: v for k, v in changes.items() if v is not None} if isinstance(changes, dict)
                                 else changes, where)
    return {k: kept.get(k) for k in changes}


def check_normalization(norm: Any, where: str = "normalization") -> dict[str, tuple[float, ...]]:
    """``norm`` as ``{"mean": 3 floats, "std": 3 floats > 0}``, all finite.

    Raises:
        WeightsError: anything else (a zero std would turn images into NaN).
    """
    try:
        mean, std = (tuple(float(v) for v in norm[k]) for k in ("mean", "std"))
    except (TypeError, KeyError, ValueError, IndexError):
        raise WeightsError(f"{where}: expected {{'mean': [3 numbers], 'std': [3 numbers]}}, got {norm!r}") from None
    if len(mean) != 3 or len(std) != 3:
        raise WeightsError(f"{where}: mean and std need 3 values each (R, G, B), got {norm!r}")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise WeightsError(f"{where}: mean must be finite and std finite and > 0, got {norm!r}")
    return {"mean": mean, "std": std}


def save_weights(
    model: ClickSegModel,
    path: str | os.PathLike,
    *,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    trained: bool = True,
    half: bool = True,
) -> str:
    """Write ``model`` to a safetensors file atomically; returns the file's sha256.

    Args:
        model: a registered model (``create_model`` sets its name and kwargs).
        path: destination ``.safetensors`` file.
        training: description of the training run.
        metrics: evaluation scores.
        engine: Predictor settings that suit these weights (``ENGINE_SETTINGS``).
        trained: False marks a random initialisation.
        half: store floating tensors as fp16 (halves the size).
    """
    import torch

    if not getattr(model, "arch_name", ""):
        raise WeightsError("model has no registry name; build it with create_model()")
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point() and "running_var" not in k:
            v = v.to(torch.float16)
        state[k] = v.contiguous()
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": model.arch_name,
        "kwargs": model.arch_kwargs,
        "normalization": {k: list(v) for k, v in model.normalization.items()},
        "training": training or {},
        "metrics": metrics or {},
        "trained": bool(trained),
    }
    if engine:
        meta["engine"] = check_engine_settings(engine)
    return _write(state, meta, Path(path))


def _write(state: dict[str, Any], meta: dict[str, Any], path: Path) -> str:
    """Write a weights file atomically (a temporary name, then a rename); returns its sha256.

    A file that is replaced keeps its permissions; a new one gets those the umask allows
    (safetensors alone would make it private to its owner).

    Raises:
        WeightsError: ``path`` is a folder or cannot be written (nothing is left behind).
    """
    from safetensors.torch import save_file

    if path.is_dir():
        raise WeightsError(f"cannot write weights to {path}: it is a folder")
    try:
        with replacing(path) as tmp:
            save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    except Exception as e:  # OSError, or safetensors' own error type for the same causes
        raise WeightsError(f"cannot write {path}: {e}") from None
    return sha256_file(path)


def set_engine_settings(path: str | os.PathLike, changes: dict[str, Any]) -> str:
    """Change a weights file's ``engine`` settings in place (tensors unchanged, atomic).

    The settings named in ``changes`` take its values and the file's others stay;
    a value of None removes that setting (the engine's default applies again).
    Returns the file's new sha256.

    Raises:
        WeightsError: unreadable file, invalid settings, or a shipped file (whose
            sha256 the manifest checks on every load).
    """
    from safetensors import safe_open

    meta = read_metadata(path)
    for name, entry in shipped_manifest()["models"].items():
        shipped = weights_dir() / entry["file"]
        if shipped.is_file() and Path(path).samefile(shipped):
            raise WeightsError(
                f"{path} is the shipped {name!r} weights file, which is checked against its sha256 on every "
                f"load; change a copy, or pass the settings to Predictor.from_pretrained({name!r}, ...)"
            )
    check_engine_changes(changes)
    merged = {k: v for k, v in {**meta.get("engine", {}), **changes}.items() if v is not None}
    engine = check_engine_settings(merged)
    meta.pop("engine", None)
    if engine:
        meta["engine"] = engine
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    return _write(state, meta, path)


def _not_a_weights_file(path: Path) -> WeightsError:
    """The error for a ``path`` that is no file: missing, or a folder (a training run?)."""
    if path.is_dir():
        files = sorted(f.name for f in path.glob("*.safetensors"))
        hint = f"; it holds {', '.join(files)}" if files else ""
        return WeightsError(f"{path} is a folder, not a weights file{hint}")
    return WeightsError(f"weights file not found: {path}")


def _unreadable(path: Path, error: Exception) -> WeightsError:
    """The error for a file safetensors cannot read; a PyTorch zip (``checkpoint.pt``) is named as such."""
    try:
        with open(path, "rb") as f:
            torch_zip = f.read(4) == b"PK\x03\x04"
    except OSError:
        torch_zip = False
    if torch_zip:
        return WeightsError(
            f"{path} is a PyTorch file (a training run's checkpoint.pt?), not safetensors weights; "
            "load the run's best.safetensors or last.safetensors"
        )
    return WeightsError(f"cannot read weights file {path}: corrupt or not safetensors ({error})")


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a weights file without loading tensors.

    Raises:
        WeightsError: missing, unreadable or not a napari-clickseg weights file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise _not_a_weights_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises several error types for corrupt files
        raise _unreadable(path, e) from None
    if raw is None:
        raise WeightsError(f"{path} is a safetensors file but has no napari-clickseg metadata")
    try:
        meta = json.loads(raw)
        ok = isinstance(meta["arch"], str) and isinstance(meta["kwargs"], dict)
    except (json.JSONDecodeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise WeightsError(
            f"{path} has corrupt napari-clickseg metadata (expected 'arch': name and 'kwargs': {{...}})"
        )
    if "engine" in meta:
        meta["engine"] = check_engine_settings(meta["engine"], f"{path}: engine")
    if meta.get("normalization") is not None:
        meta["normalization"] = check_normalization(meta["normalization"], f"{path}: normalization")
    return meta


def load_weights(
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    allow_untrained: bool = False,
    expected_sha256: str | None = None,
) -> tuple[ClickSegModel, dict[str, Any]]:
    """Rebuild a model from a weights file (strict loading, fp32 parameters).

    Args:
        path: the ``.safetensors`` file.
        arch: if given, the file must hold this architecture.
        allow_untrained: accept files marked as random initialisation (tests).
        expected_sha256: verify the file's hash (shipped weights).

    Returns:
        The model in eval mode and the metadata, with ``sha256`` and ``path`` added.

    Raises:
        WeightsError: on any problem, with a message naming the file.
    """
    from safetensors.torch import load_file

    from .models import create_model

    path = Path(path)
    meta = read_metadata(path)
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise WeightsError(f"{path} is corrupt: sha256 {digest} != expected {expected_sha256}")
    if arch is not None and meta["arch"] != arch:
        raise WeightsError(f"{path} holds weights for {meta['arch']!r}, not {arch!r}")
    if not meta.get("trained", False) and not allow_untrained:
        raise WeightsError(f"{path} holds untrained (random) weights; refusing to use them")
    try:
        model = create_model(meta["arch"], **meta["kwargs"])
    except (ValueError, TypeError, RuntimeError) as e:  # e.g. kwargs of the wrong type or range
        raise WeightsError(f"{path}: cannot build model {meta['arch']!r} from its metadata: {e}") from None
    try:
        state = load_file(str(path))
    except Exception as e:
        raise WeightsError(f"cannot read tensors from {path}: {e}") from None
    own = model.state_dict()
    for k, v in state.items():
        if k in own and v.dtype.is_floating_point != own[k].dtype.is_floating_point:
            raise WeightsError(
                f"{path}: tensor {k!r} is stored as {v.dtype}, but the model's is {own[k].dtype} "
                "(a cast would change its values)"
            )
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path} does not fit model {meta['arch']!r}: {e}") from None
    _check_finite(model, path)
    model.eval()
    meta = dict(meta, sha256=digest, path=str(path))
    return model, meta


def average_weights(paths: list[str | os.PathLike], out: str | os.PathLike) -> str:
    """Write the mean of several weights files of one model (a "model soup"); returns its sha256.

    Meant for fine-tunes of the same start (Wortsman et al. 2022), whose mean can
    beat each of them. Every floating tensor, BatchNorm statistics included, is
    averaged in float64; integer buffers come from the first file. The metadata (normalisation,
    engine settings) comes from the first file, and ``training`` lists each
    member's file, sha256 and training metadata under ``averaged``.

    Raises:
        WeightsError: fewer than two files, a file that cannot be loaded, or files
            whose architecture, kwargs, normalisation or engine settings differ.
    """
    if len(paths) < 2:
        raise WeightsError(f"averaging needs at least two weights files, got {len(paths)}")
    first, meta = load_weights(paths[0])
    total = {k: v.double() if v.is_floating_point() else v.clone() for k, v in first.state_dict().items()}
    members = [meta]
    for path in paths[1:]:
        model, m = load_weights(path)
        for key in ("arch", "kwargs", "normalization", "engine"):
            if m.get(key) != meta.get(key):
                raise WeightsError(
                    f"{path} differs from {paths[0]} in {key!r} ({m.get(key)!r} vs {meta.get(key)!r}); "
                    "only weights of the same model can be averaged"
                )
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                total[k] += v.double()
        members.append(m)
    first.load_state_dict({k: v / len(paths) if v.is_floating_point() else v for k, v in total.items()})
    averaged = [{"file": str(m["path"]), "sha256": m["sha256"], "training": m.get("training", {})} for m in members]
    return save_weights(first, out, training={"averaged": averaged}, engine=meta.get("engine"))


def _check_finite(model: ClickSegModel, path: Path) -> None:
    """Raise if any floating tensor of the state dict (parameters and buffers) is NaN or inf."""
    import torch

    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise WeightsError(f"{path} contains non-finite values in tensor {name!r}")


def weights_dir() -> Path:
    """Folder of shipped weights: $NAPARI_CLICKSEG_WEIGHTS, the installed copy, or the repo's."""
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    installed = here / "_weights"
    if (installed / "manifest.json").is_file():
        return installed
    return here.parents[1] / "weights"


def shipped_manifest() -> dict[str, Any]:
    """The manifest of shipped weights: ``{"default": name, "models": {name: {file, sha256}}}``."""
    f = weights_dir() / "manifest.json"
    if not f.is_file():
        return {"default": None, "models": {}}
    try:
        manifest = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WeightsError(f"corrupt weights manifest: {f}") from None
    models = manifest.get("models", {}) if isinstance(manifest, dict) else None
    if not isinstance(models, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("file"), str) for e in models.values()
    ):
        raise WeightsError(
            f"corrupt weights manifest: {f} (expected {{'models': {{name: {{'file': ..., 'sha256': ...}}}}}})"
        )
    manifest.setdefault("default", None)
    manifest["models"] = models
    return manifest


def shipped_models() -> list[str]:
    """Names of models with trained, shipped weights."""
    return sorted(shipped_manifest().get("models", {}))


def resolve_weights(name_or_path: str | os.PathLike) -> tuple[Path, str | None]:
    """Map "default", a model name or a file path to (file, expected sha256 or None).

    Raises:
        WeightsError: if no trained weights exist for the name or the file is missing.
    """
    s = str(name_or_path)
    manifest = shipped_manifest()
    models = manifest.get("models", {})
    if s == "default":
        s = manifest.get("default") or ""
        if not s:
            raise WeightsError("no default weights are shipped yet")
    if s in models:
        entry = models[s]
        return weights_dir() / entry["file"], entry.get("sha256")
    p = Path(s)
    if p.suffix == ".safetensors" or p.exists() or os.sep in s:
        if not p.is_file():
            raise _not_a_weights_file(p)
        return p, None
    from .models import list_models

    if s in list_models():
        raise WeightsError(
            f"no trained weights are shipped for model {s!r}; shipped: {sorted(models) or 'none'}"
        )
    raise WeightsError(
        f"{s!r} is neither a shipped model ({sorted(models) or 'none'}), 'default', nor a weights file"
    )
