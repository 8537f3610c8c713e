"""End to end from the command line: fine-tune on a small folder, kill the run, resume, evaluate."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_clickseg.training.checkpoint import load_checkpoint
from test_training import _folder  # tests/ is on sys.path (pytest prepend mode)

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "napari_clickseg.cli"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _train_cmd(data: Path, out: Path, iterations: int) -> list[str]:
    return [
        *CLI, "train", "--model", "early", "--data", str(data), "--val", str(data),
        "--init", "scratch", "--iterations", str(iterations), "--batch-size", "2",
        "--crop-size", "64", "--threads", "1", "--val-every", "0", "--val-objects", "2",
        "--out", str(out),
        "--set", 'model_kwargs={"decoder_width": 8}', "--set", "checkpoint_minutes=0",
        "--set", "log_every=1", "--set", "warmup_iterations=1",
    ]  # fmt: skip


def test_finetune_kill_resume_evaluate(tmp_path):
    data = _folder(tmp_path / "data", n=3)
    out = tmp_path / "run"
    # 1. start a long run and kill it hard once a checkpoint past step 2 exists
    proc = subprocess.Popen(
        _train_cmd(data, out, 1000), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    ckpt = out / "checkpoint.pt"
    deadline = time.monotonic() + 900  # generous: loaded machines start slowly
    step = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.is_file():
                try:
                    step = load_checkpoint(ckpt)["step"]
                except Exception:  # being replaced right now; os.replace makes that brief
                    step = 0
                if step >= 2:
                    break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert step >= 2, proc.stdout.read().decode()[-2000:]
    killed_at = load_checkpoint(ckpt)["step"]
    assert killed_at >= 2
    # 2. resume: the step counter continues, the log has every step once, nothing is lost
    target = killed_at + 2
    r = subprocess.run(
        [*_train_cmd(data, out, target), "--resume"], env=ENV, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert load_checkpoint(ckpt)["step"] == target
    with open(out / "log.csv", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row["loss"]]
    assert steps == list(range(1, target + 1))
    weights = out / "last.safetensors"
    assert weights.is_file()
    # 3. evaluate the fine-tuned weights with the robot user (random-init-like, so only
    # the pipeline is checked: a report with the right number of objects and clicks)
    ev = tmp_path / "eval"
    r = subprocess.run(
        [*CLI, "evaluate", "--model", str(weights), "--data", str(data), "--max-clicks", "2",
         "--out", str(ev), "-q"],
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((ev / "evaluation.json").read_text())["runs"][0]
    assert result["metrics"]["n_objects"] == 3
    assert len(result["metrics"]["miou_curve"]) == 2
    assert result["model"]["weights_path"] == str(weights)
    assert (ev / "evaluation.md").is_file() and (ev / "miou.png").is_file()
