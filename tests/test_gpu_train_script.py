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


def test_each_numeric_field_is_checked(tmp_path):
    # regression: the fields were checked joined, so an empty BATCH or a word for MINUTES passed
    init = tmp_path / "w.safetensors"
    init.write_bytes(b"x")
    for minutes, spec in (("1", f"hires:{init}:1::2:3e-4"), ("1", f"hires:{init}:0:2:0:3e-4"),
                          ("abc", f"hires:{init}:1:2:0:3e-4")):
        r = _run(minutes, str(tmp_path / "runs"), str(tmp_path / "data"), spec)
        assert r.returncode == 2 and ("bad spec" in r.stderr or "MINUTES" in r.stderr), (minutes, spec)


def test_finetune_script_finds_the_weights_from_any_folder_and_keeps_logs(tmp_path):
    # regression: it read weights/MODEL.safetensors relative to the current folder (every run
    # died in the background elsewhere) and emptied an earlier run's log before starting
    script = SCRIPT.with_name("finetune.sh")
    r = subprocess.run(["bash", str(script), str(tmp_path / "runs"), "nosuchmodel:1:1e-4:10"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "weights/nosuchmodel.safetensors" in r.stderr
    assert '>>"$runs/$model.log"' in script.read_text()  # appended, never emptied
