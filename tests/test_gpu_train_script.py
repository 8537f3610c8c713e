"""scripts/gpu_train.sh: argument checks and the packed archive, without training."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_train.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_bad_spec_is_refused(tmp_path):
    r = _run("1", str(tmp_path / "runs"), str(tmp_path / "data"), "hires:missing.safetensors:2:16:2:1e-4")
    assert r.returncode == 2 and "bad spec" in r.stderr


def test_archive_is_unpacked_and_missing_folders_named(tmp_path):
    init = tmp_path / "w.safetensors"
    init.write_bytes(b"x")
    src = tmp_path / "pack" / "data"
    for name in ("dsb2018/train", "ph2/train"):  # coco_mval missing
        (src / name / "images").mkdir(parents=True)
    with tarfile.open(tmp_path / "data.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="data")
    r = _run("1", str(tmp_path / "runs"), str(tmp_path / "data"), f"hires:{init}:1:2:0:1e-4")
    assert (tmp_path / "data/dsb2018/train/images").is_dir()  # unpacked beside the archive
    assert r.returncode == 2 and "coco_mval/images" in r.stderr
