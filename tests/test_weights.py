"""Self-describing weights files: round trip, strictness and every way a file can be bad."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_clickseg.engine import Predictor
from napari_clickseg.models import ClickSegModel, create_model, list_models
from napari_clickseg.weights import (
    ENGINE_SETTINGS,
    ENV_WEIGHTS_DIR,
    META_KEY,
    WeightsError,
    average_weights,
    load_weights,
    read_metadata,
    resolve_weights,
    save_weights,
    set_engine_settings,
    sha256_file,
    shipped_manifest,
    shipped_models,
    weights_dir,
)

ARCH = "early"
KWARGS = {"decoder_width": 8}


@pytest.fixture(scope="module")
def model() -> ClickSegModel:
    torch.manual_seed(0)
    m = create_model(ARCH, **KWARGS)
    # give BatchNorm non-trivial statistics so the round trip covers them
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    """(path, sha256) of ``model`` saved as trained fp16 weights."""
    path = tmp_path_factory.mktemp("w") / "early.safetensors"
    digest = save_weights(model, path, training={"iterations": 3}, metrics={"noc90": 4.2})
    return path, digest


def inputs(model, b=1, size=64):
    g = torch.Generator().manual_seed(1)
    image = torch.randn(b, 3, size, size, generator=g)
    clicks = torch.rand(b, model.inputs.click_channels, size, size, generator=g)
    return image, clicks


def logits(model, x):
    with torch.no_grad():
        return model(*x)["logits"]


def rounded_to_fp16(model: ClickSegModel) -> ClickSegModel:
    """A copy of ``model`` with weights rounded as ``save_weights(half=True)`` stores them."""
    copy = create_model(model.arch_name, **model.arch_kwargs)
    state = {
        k: (v.half().float() if v.is_floating_point() and "running_var" not in k else v)
        for k, v in model.state_dict().items()
    }
    copy.load_state_dict(state)
    return copy.eval()


def rewrite(src, dst, *, meta=None, state=None, drop_meta=False):
    """Write a safetensors file from ``src`` with changed metadata or tensors."""
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        old = json.loads(f.metadata()[META_KEY])
    if meta is not None:
        old.update(meta)
    if state is not None:
        tensors = state(tensors)
    save_file(tensors, str(dst), metadata=None if drop_meta else {META_KEY: json.dumps(old)})
    return dst


# ---------------------------------------------------------------- round trip


def test_round_trip_fp16(model, saved):
    path, digest = saved
    loaded, meta = load_weights(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.arch_kwargs == KWARGS
    x = inputs(model)
    # bit-exact against the same weights rounded to fp16 ...
    torch.testing.assert_close(logits(loaded, x), logits(rounded_to_fp16(model), x), rtol=1e-5, atol=1e-5)
    # ... and close to the original fp32 model
    ref = logits(model, x)
    err = (logits(loaded, x) - ref).abs().max().item()
    assert err <= 2e-2 * max(1.0, ref.abs().max().item())
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_file_stores_fp16_and_metadata(model, saved):
    path, digest = saved
    assert digest == sha256_file(path)
    assert not path.with_name(path.name + ".tmp").exists()
    with safe_open(str(path), framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert set(dtypes) == set(model.state_dict())
    for k, dt in dtypes.items():
        if k.endswith("num_batches_tracked"):
            assert dt == "I64"
        elif k.endswith("running_var"):
            assert dt == "F32"
        else:
            assert dt == "F16", k
    meta = read_metadata(path)
    assert meta["arch"] == ARCH and meta["kwargs"] == KWARGS
    assert meta["trained"] is True
    assert meta["training"] == {"iterations": 3} and meta["metrics"] == {"noc90": 4.2}
    assert meta["normalization"]["mean"] == pytest.approx(list(model.normalization["mean"]))
    assert meta["normalization"]["std"] == pytest.approx(list(model.normalization["std"]))
    _, loaded_meta = load_weights(path)
    assert loaded_meta["sha256"] == digest and loaded_meta["path"] == str(path)


def test_round_trip_fp32_is_exact(model, tmp_path):
    path = tmp_path / "sub" / "dir" / "w.safetensors"  # parent folders are created
    save_weights(model, path, half=False)
    loaded, _ = load_weights(path)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_save_overwrites_atomically(model, saved, tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"old")
    save_weights(model, path)
    assert read_metadata(path)["arch"] == ARCH
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_saved_files_follow_the_umask_and_keep_their_mode(model, tmp_path):
    # regression: safetensors creates files readable by their owner only
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.safetensors"
        save_weights(model, new)
        assert new.stat().st_mode & 0o777 == 0o644
        os.chmod(new, 0o640)
        set_engine_settings(new, {"min_crop_size": 64})
        save_weights(model, new)
        assert new.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_write_errors_are_weights_errors(model, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(WeightsError, match="cannot write"):
        save_weights(model, tmp_path / "a-file" / "w.safetensors")
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(WeightsError, match="it is a folder"):
        save_weights(model, tmp_path / "folder.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["a-file", "folder.safetensors"]


def test_save_needs_registry_name(tmp_path):
    class Anonymous(ClickSegModel):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 1)

    with pytest.raises(WeightsError, match="create_model"):
        save_weights(Anonymous(), tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


# ---------------------------------------------------------------- refusals


def test_untrained_is_refused_unless_allowed(model, tmp_path):
    path = tmp_path / "init.safetensors"
    save_weights(model, path, trained=False)
    with pytest.raises(WeightsError, match="untrained"):
        load_weights(path)
    loaded, meta = load_weights(path, allow_untrained=True)
    assert meta["trained"] is False and isinstance(loaded, ClickSegModel)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="is a folder, not a weights file$"):
        read_metadata(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 7, os.urandom(4096), b"\xff" * 8 + b"{}", b'{"__metadata__": 1}'],
    ids=["empty", "short", "random", "huge-header", "json-text"],
)
def test_corrupt_bytes(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_weights(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file(saved, tmp_path, keep):
    src, _ = saved
    data = src.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(WeightsError, match="cut.safetensors"):
        load_weights(path)


def test_file_without_metadata(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "plain.safetensors", drop_meta=True)
    with pytest.raises(WeightsError, match="no napari-clickseg metadata"):
        load_weights(path)


@pytest.mark.parametrize(
    "raw",
    [
        "not json", "[]", '{"arch": "early"}', '{"kwargs": {}}', "null",
        '{"arch": "early", "kwargs": [1, 2]}', '{"arch": ["early"], "kwargs": {}}',
    ],
)
def test_corrupt_metadata(saved, tmp_path, raw):
    src, _ = saved
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    path = tmp_path / "meta.safetensors"
    save_file(tensors, str(path), metadata={META_KEY: raw})
    with pytest.raises(WeightsError, match="corrupt napari-clickseg metadata") as e:
        load_weights(path)
    assert str(path) in str(e.value)


def test_wrong_arch(saved):
    with pytest.raises(WeightsError, match="not 'fca'"):
        load_weights(saved[0], arch="fca")
    model, _ = load_weights(saved[0], arch=ARCH)
    assert model.arch_name == ARCH


def test_unknown_arch_in_file(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "u.safetensors", meta={"arch": "no_such_model"})
    with pytest.raises(WeightsError, match="unknown model 'no_such_model'"):
        load_weights(path)


@pytest.mark.parametrize("kwargs", [{"bogus": 1}, {"decoder_width": "wide"}])
def test_bad_kwargs_in_file(saved, tmp_path, kwargs):
    path = rewrite(saved[0], tmp_path / "k.safetensors", meta={"kwargs": kwargs})
    with pytest.raises(WeightsError, match="cannot build model 'early'") as e:
        load_weights(path)
    assert str(path) in str(e.value)


def test_strict_loading_missing_key(saved, tmp_path):
    def drop(t):
        t.pop(sorted(t)[0])
        return t

    path = rewrite(saved[0], tmp_path / "m.safetensors", state=drop)
    with pytest.raises(WeightsError, match="does not fit"):
        load_weights(path)


def test_strict_loading_unexpected_key(saved, tmp_path):
    def add(t):
        t["extra.weight"] = torch.zeros(3)
        return t

    path = rewrite(saved[0], tmp_path / "x.safetensors", state=add)
    with pytest.raises(WeightsError, match="does not fit"):
        load_weights(path)


def test_strict_loading_shape_mismatch(saved, tmp_path):
    # tensors of decoder_width=8, metadata claiming decoder_width=16
    path = rewrite(saved[0], tmp_path / "s.safetensors", meta={"kwargs": {"decoder_width": 16}})
    with pytest.raises(WeightsError, match="does not fit"):
        load_weights(path)


@pytest.mark.parametrize("kind", [torch.int32, torch.bool])
def test_tensors_of_another_kind_are_refused_not_cast(saved, tmp_path, kind):
    # regression: an int32 or bool tensor was cast into the float parameter (x1000 or all ones)
    name = next(k for k in sorted(load_weights(saved[0])[0].state_dict()) if k.endswith("weight"))

    def recast(t):
        t[name] = (t[name].float() * 1000).to(kind)
        return t

    path = rewrite(saved[0], tmp_path / "k.safetensors", state=recast)
    with pytest.raises(WeightsError, match=rf"k.safetensors: tensor '{re.escape(name)}' is stored as"):
        load_weights(path)


@pytest.mark.parametrize("norm, match", [
    ({"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}, "std finite and > 0"),
    ({"mean": [0.5], "std": [0.2]}, "3 values each"),
    ({"mean": [float("nan")] * 3, "std": [0.2] * 3}, "must be finite"),
    ("x", "expected"),
])
def test_bad_normalization_is_refused(saved, tmp_path, norm, match):
    # regression: a zero std loaded and turned images into NaN probabilities
    path = rewrite(saved[0], tmp_path / "n.safetensors", meta={"normalization": norm})
    with pytest.raises(WeightsError, match=f"n.safetensors: normalization: .*{match}"):
        load_weights(path)


def test_non_finite_parameters_are_refused(model, tmp_path):
    bad = create_model(ARCH, **KWARGS)
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(bad.parameters()).view(-1)[0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_weights(bad, path)
    with pytest.raises(WeightsError, match="non-finite"):
        load_weights(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_buffers_are_refused(saved, tmp_path, value):
    """BatchNorm statistics are buffers, not parameters: a NaN there gives NaN predictions."""
    key = next(k for k in read_metadata_keys(saved[0]) if k.endswith("running_var"))

    def poison(t):
        t[key] = torch.full_like(t[key], value)
        return t

    path = rewrite(saved[0], tmp_path / "nanbuf.safetensors", state=poison)
    with pytest.raises(WeightsError, match=f"non-finite values in tensor '{key}'"):
        load_weights(path)


def read_metadata_keys(path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return sorted(f.keys())


def test_engine_settings_round_trip(model, tmp_path):
    f = tmp_path / "e.safetensors"
    save_weights(model, f, engine={"min_crop_size": 80, "max_upscale": 2.4})
    assert read_metadata(f)["engine"] == {"min_crop_size": 80, "max_upscale": 2.4}
    plain = tmp_path / "p.safetensors"
    save_weights(model, plain)
    assert "engine" not in read_metadata(plain)


def test_engine_settings_take_any_value_the_predictor_takes(model, tmp_path):
    # regression (review, audit 30): the file's own bounds ([0.1, 64], [1, 4], [1, 4096]) refused
    # settings a Predictor runs with; both now check against checks.ENGINE_LIMITS
    p = Predictor(model, device="cpu", min_crop_size=5000, max_upscale=100.0, expansion=5.0)
    tuned = {name: getattr(p, name) for name in ENGINE_SETTINGS}
    f = tmp_path / "tuned.safetensors"
    save_weights(model, f)
    set_engine_settings(f, tuned)
    assert read_metadata(f)["engine"] == tuned == {"min_crop_size": 5000, "max_upscale": 100.0, "expansion": 5.0}


@pytest.mark.parametrize("engine, match", [
    ({"zoom": 2}, "unknown setting 'zoom'"),
    ({"min_crop_size": 40.5}, "min_crop_size must be an integer"),
    ({"min_crop_size": True}, "must be an integer"),
    ({"max_upscale": "2"}, "max_upscale must be a finite number"),
    ({"max_upscale": 0}, "max_upscale must be a finite number > 0, got 0"),
    ({"max_upscale": float("nan")}, "max_upscale must be a finite number > 0"),
    ({"min_crop_size": 0}, "min_crop_size must be an integer >= 1, got 0"),
    ({"expansion": 0.5}, "expansion must be a finite number >= 1, got 0.5"),
    ([80], "expected a dict"),
])
def test_bad_engine_settings(model, saved, tmp_path, engine, match):
    with pytest.raises(WeightsError, match=match):
        save_weights(model, tmp_path / "bad.safetensors", engine=engine)
    assert not (tmp_path / "bad.safetensors").exists()
    # a file carrying bad settings is refused on read, naming the file
    f = tmp_path / "tampered.safetensors"
    path, _ = saved
    with safe_open(str(path), framework="pt") as g:
        meta = json.loads(g.metadata()[META_KEY])
        state = {k: g.get_tensor(k) for k in g.keys()}  # noqa: SIM118
    save_file(state, str(f), metadata={META_KEY: json.dumps({**meta, "engine": engine})})
    with pytest.raises(WeightsError, match="tampered.safetensors: engine"):
        load_weights(f)


def test_set_engine_settings_keeps_tensors(model, saved, tmp_path):
    path, digest = saved
    f = tmp_path / "copy.safetensors"
    f.write_bytes(path.read_bytes())
    new = set_engine_settings(f, {"min_crop_size": 64})
    assert new == sha256_file(f) != digest
    meta = read_metadata(f)
    assert meta["engine"] == {"min_crop_size": 64} and meta["training"] == {"iterations": 3}
    with safe_open(str(path), framework="pt") as a, safe_open(str(f), framework="pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118
    with pytest.raises(WeightsError, match="unknown setting"):
        set_engine_settings(f, {"nope": 1})
    assert read_metadata(f)["engine"] == {"min_crop_size": 64}  # a refused change leaves the file alone
    # regression: changing one setting dropped the file's others (hires lost max_upscale 2.4
    # and expansion 1.8, as the README's example did to a fine-tune)
    set_engine_settings(f, {"max_upscale": 2.4, "expansion": 1.8})
    assert read_metadata(f)["engine"] == {"min_crop_size": 64, "max_upscale": 2.4, "expansion": 1.8}
    set_engine_settings(f, {"min_crop_size": 80})
    assert read_metadata(f)["engine"] == {"min_crop_size": 80, "max_upscale": 2.4, "expansion": 1.8}
    before = sha256_file(f)
    assert set_engine_settings(f, {}) == before  # nothing named: nothing changes
    assert set_engine_settings(f, {"max_upscale": None}) != before  # None removes one
    assert read_metadata(f)["engine"] == {"min_crop_size": 80, "expansion": 1.8}
    with pytest.raises(WeightsError, match="expected a dict"):
        set_engine_settings(f, [80])
    # removing them all restores the original file
    assert set_engine_settings(f, {"min_crop_size": None, "expansion": None}) == digest
    assert "engine" not in read_metadata(f)


def test_sha256_mismatch(saved):
    path, digest = saved
    load_weights(path, expected_sha256=digest)
    with pytest.raises(WeightsError, match="sha256"):
        load_weights(path, expected_sha256="0" * 64)


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    data = os.urandom(3 << 20)  # several read chunks
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- shipped weights and names


@pytest.fixture
def weights_folder(tmp_path, monkeypatch, saved):
    """A temporary $NAPARI_CLICKSEG_WEIGHTS holding one shipped model."""
    src, digest = saved
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "early-v1.safetensors").write_bytes(src.read_bytes())
    manifest = {"default": ARCH, "models": {ARCH: {"file": "early-v1.safetensors", "sha256": digest}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(ENV_WEIGHTS_DIR, str(folder))
    return folder, digest


def test_weights_dir_env(weights_folder):
    folder, _ = weights_folder
    assert weights_dir() == folder
    assert shipped_models() == [ARCH]
    assert shipped_manifest()["default"] == ARCH


def test_resolve_default_and_name(weights_folder):
    folder, digest = weights_folder
    assert resolve_weights("default") == (folder / "early-v1.safetensors", digest)
    assert resolve_weights(ARCH) == (folder / "early-v1.safetensors", digest)
    path, sha = resolve_weights("default")
    model, meta = load_weights(path, expected_sha256=sha)
    assert meta["sha256"] == digest and model.arch_name == ARCH


def test_set_engine_settings_refuses_a_shipped_file(weights_folder):
    # regression (API audit, session 29): it rewrote the shipped file, whose sha256 the manifest
    # checks, so "default" failed as corrupt until the package was reinstalled
    folder, digest = weights_folder
    f = folder / "early-v1.safetensors"
    with pytest.raises(WeightsError, match="shipped 'early' weights file.*change a copy"):
        set_engine_settings(f, {"min_crop_size": 64})
    assert sha256_file(f) == digest
    path, sha = resolve_weights("default")
    load_weights(path, expected_sha256=sha)


def test_a_folder_or_a_training_checkpoint_is_named_as_such(saved, tmp_path):
    # regression (API audit, session 29): a run folder was "not found" and its checkpoint.pt "corrupt"
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(saved[0].read_bytes())
    torch.save({"model": {}}, run / "checkpoint.pt")
    with pytest.raises(WeightsError, match="is a folder, not a weights file; it holds best.safetensors"):
        resolve_weights(str(run))
    with pytest.raises(WeightsError, match="is a folder"):
        read_metadata(run)
    with pytest.raises(WeightsError, match="PyTorch file .*checkpoint.pt.*best.safetensors or last.safetensors"):
        load_weights(run / "checkpoint.pt")


def test_resolve_tampered_shipped_file_fails_on_load(weights_folder):
    folder, _ = weights_folder
    f = folder / "early-v1.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    path, sha = resolve_weights(ARCH)
    with pytest.raises(WeightsError, match="sha256"):
        load_weights(path, expected_sha256=sha)


def test_resolve_path(weights_folder, saved, tmp_path):
    path, _ = saved
    assert resolve_weights(path) == (path, None)
    assert resolve_weights(str(path)) == (path, None)
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "missing" / "file.bin"))


def test_resolve_unknown_name(weights_folder):
    with pytest.raises(WeightsError, match="neither a shipped model") as e:
        resolve_weights("no_such_thing")
    assert ARCH in str(e.value)


def test_resolve_registered_but_not_shipped(weights_folder):
    with pytest.raises(WeightsError, match="no trained weights are shipped for model 'fca'"):
        resolve_weights("fca")


def test_no_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_WEIGHTS_DIR, str(tmp_path))
    assert shipped_manifest() == {"default": None, "models": {}}
    assert shipped_models() == []
    with pytest.raises(WeightsError, match="no default weights"):
        resolve_weights("default")
    with pytest.raises(WeightsError, match="shipped: none"):
        resolve_weights(ARCH)


def test_corrupt_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_WEIGHTS_DIR, str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(WeightsError, match="corrupt weights manifest"):
        resolve_weights("default")


@pytest.mark.parametrize(
    "content",
    ["[]", '{"models": []}', '{"models": {"early": "early.safetensors"}}', '{"models": {"early": {}}}', b"\xff\xfe"],
)
def test_malformed_manifest(tmp_path, monkeypatch, content):
    monkeypatch.setenv(ENV_WEIGHTS_DIR, str(tmp_path))
    f = tmp_path / "manifest.json"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(WeightsError, match="corrupt weights manifest"):
        resolve_weights("early")


def test_failed_save_keeps_the_old_file_and_no_temp(model, saved, tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "keep.safetensors"
    path.write_bytes(saved[0].read_bytes())

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(WeightsError, match="cannot write.*disk full"):
        save_weights(model, path)
    assert path.read_bytes() == saved[0].read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["keep.safetensors"]


def test_repository_manifest_is_consistent(monkeypatch):
    """Every shipped file exists, matches its sha256 and holds trained weights of its name."""
    monkeypatch.delenv(ENV_WEIGHTS_DIR, raising=False)
    manifest = shipped_manifest()
    models = manifest.get("models", {})
    # every registered architecture ships trained weights, and the default is one of them
    assert sorted(models) == sorted(list_models()) and manifest.get("default") in models
    for name, entry in models.items():
        path = weights_dir() / entry["file"]
        assert path.is_file(), f"{name}: {path} missing"
        assert sha256_file(path) == entry["sha256"], f"{name}: sha256 differs from the manifest"
        meta = read_metadata(path)
        assert meta["arch"] == name, (name, meta["arch"])
        assert meta.get("trained") is True



# ---------------------------------------------------------------- averaging (model soups)


def _shifted(model: ClickSegModel, delta: float) -> ClickSegModel:
    """A copy of ``model`` with ``delta`` added to every floating tensor."""
    copy = create_model(model.arch_name, **model.arch_kwargs)
    copy.load_state_dict({k: v + delta if v.is_floating_point() else v for k, v in model.state_dict().items()})
    return copy.eval()


def test_average_weights_is_the_mean_and_names_its_members(model, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    engine = {"min_crop_size": 80}
    sha_a = save_weights(_shifted(model, 0.0), a, training={"iterations": 1}, engine=engine, half=False)
    sha_b = save_weights(_shifted(model, 0.5), b, training={"iterations": 2}, engine=engine, half=False)
    out = tmp_path / "mean.safetensors"
    assert average_weights([a, b], out) == sha256_file(out)
    mean, meta = load_weights(out)
    expected = _shifted(model, 0.25).state_dict()
    for k, v in mean.state_dict().items():  # stored as fp16 (running_var in fp32)
        torch.testing.assert_close(v, expected[k], atol=2e-3, rtol=1e-3)
    assert meta["engine"] == engine and meta["arch"] == ARCH and meta["kwargs"] == KWARGS
    assert [(m["sha256"], m["training"]) for m in meta["training"]["averaged"]] == [
        (sha_a, {"iterations": 1}), (sha_b, {"iterations": 2})]


def test_average_weights_refuses_files_of_different_models(model, saved, tmp_path):
    path, _ = saved
    other = tmp_path / "other.safetensors"
    save_weights(create_model(ARCH, decoder_width=16), other)
    with pytest.raises(WeightsError, match="differs from .* in 'kwargs'"):
        average_weights([path, other], tmp_path / "x.safetensors")
    zoomed = tmp_path / "zoomed.safetensors"
    save_weights(model, zoomed, engine={"max_upscale": 2.0})
    with pytest.raises(WeightsError, match="in 'engine'"):
        average_weights([path, zoomed], tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="at least two"):
        average_weights([path], tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        average_weights([path, tmp_path / "missing.safetensors"], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


# regression (audit 21): an inverted input passed every engine, CLI and weights test
def test_shipped_default_segments_the_sample_nuclei(monkeypatch):
    import numpy as np

    from napari_clickseg._napari.sample_data import load_sample
    from napari_clickseg.engine import Predictor
    from napari_clickseg.evaluation.runner import evaluate

    monkeypatch.delenv("NAPARI_CLICKSEG_WEIGHTS", raising=False)
    image, labels = load_sample("nuclei_fluorescence")
    ids = [i for i in np.unique(labels) if i and (labels == i).sum() >= 100][:6]
    r = evaluate(Predictor.from_pretrained("default", device="cpu"), [(image, labels == i) for i in ids], max_clicks=2)
    # measured 0.84 at click 1 on these objects; an inverted input gives 0.63
    assert r["metrics"]["miou"]["1"] > 0.75
