"""``napari-clickseg bench``: smoke tests (no timing assertions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_clickseg import bench


def test_sample_image_sizes_and_object(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_CLICKSEG_SHARED_DATA", str(tmp_path / "none"))
    for size in (96, 300):
        image, gt, src = bench.sample_image(size)
        assert image.shape[:2] == gt.shape == (size, size)
        assert src == "synthetic blobs"
        assert gt.sum() >= 30
        # one connected object: mirror copies are not part of the mask
        from scipy import ndimage

        assert ndimage.label(gt)[1] == 1


def test_memory_and_environment_readers():
    assert bench.peak_rss_mb() > 10
    env = bench.environment("cpu")
    assert env["device"] == "cpu" and env["torch_threads"] >= 1 and env["cpu"]


def test_markdown_survives_failed_cases():
    report = {
        "environment": {"device": "cpu", "cpu": "x", "cpu_count": 1, "torch": "t", "torch_threads": 1},
        "settings": {"weights": "random init", "zoom_in": True, "n_clicks": 2, "repeats": 1,
                     "brs_clicks": 1, "memory": "m"},
        "image": {"source": "s", "object_px": 40},
        "dtype_path": {},
        "rows": [{"model": "early", "size": 128, "off": {"error": "boom"}, "fbrs": {"error": "boom"}}],
        "training": {"samples_per_s": None, "note": "n/a: skipped"},
    }
    md = bench.markdown(report)
    assert "early (boom)" in md and "n/a" in md


def _run(args):
    from napari_clickseg.cli import main

    return main(["bench", *args])


def test_bench_quick_in_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_CLICKSEG_SHARED_DATA", str(tmp_path / "none"))  # synthetic image
    out = tmp_path / "b"
    rc = _run([
        "--quick", "--random-init", "--models", "early", "--sizes", "96", "--clicks", "2",
        "--brs-modes", "", "--train-iters", "0", "--no-isolate", "--out", str(out), "-q",
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| early | 96 |" in printed
    data = json.loads((out / "bench.json").read_text())
    row = data["rows"][0]
    assert "error" not in row["off"], row["off"].get("error")
    assert row["off"]["first_click_s"]["n"] == 1 and row["off"]["later_click_s"]["n"] >= 0
    assert row["random_walker"]["click_s"]["n"] >= 1
    assert row["off"]["peak_rss_mb"] > 0
    assert data["dtype_path"]["dtype"] in ("float32", "bfloat16")
    assert data["environment"]["device"] == "cpu"
    assert (out / "bench.md").read_text().startswith("# napari-clickseg bench")


def test_bench_never_replaces_results_without_overwrite(tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    (out / "bench.json").write_text("{}")
    assert _run(["--quick", "--random-init", "--models", "early", "--out", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "bench.json").read_text() == "{}"


def test_bench_refuses_labels_of_another_size(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((64, 80), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(tmp_path / "lab.png")
    args = ["--quick", "--random-init", "--models", "early", "--sizes", "64", "--brs-modes", "",
            "--train-iters", "0", "--no-isolate", "-q"]  # fmt: skip
    assert _run([*args, "--image", str(tmp_path / "img.png"), "--labels", str(tmp_path / "lab.png")]) == 2
    assert "do not fit" in capsys.readouterr().err


def test_bench_rejects_unknown_models(capsys):
    assert _run(["--random-init", "--models", "nope", "-q"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--repeats", "-2"], "--repeats must be at least 1, got -2"),
        (["--clicks", "0"], "--clicks must be at least 1, got 0"),
        (["--clicks", "-2"], "--clicks must be at least 1, got -2"),
        (["--brs-clicks", "0"], "--brs-clicks must be at least 1, got 0"),
        (["--train-batch", "0"], "--train-batch must be at least 2, got 0"),
        (["--random-init", "--train-batch", "1"], "--train-batch must be at least 2, got 1"),  # BatchNorm trains
        (["--train-iters", "-1"], "--train-iters must be at least 0, got -1"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--case-timeout", "0"], "--case-timeout must be a number of seconds in (0, 1e6], got 0.0"),
        (["--case-timeout", "inf"], "--case-timeout must be a number of seconds in (0, 1e6], got inf"),
        (["--sizes", "96,x"], "--sizes takes comma-separated integers, got '96,x'"),
        (["--sizes", ","], "--sizes must be at least 64, got ','"),
        (["--models", ","], "--models names no model"),  # benched nothing, silently
        (["--labels", "lab.png"], "--labels needs --image"),  # was ignored
    ],
)
def test_bench_rejects_bad_numbers(capsys, monkeypatch, args, message):
    """Counts below their minimum are refused (exit 2, one line), not replaced by defaults."""
    from napari_clickseg import bench

    def no_run(*_a, **_k):
        raise AssertionError("bench ran a case despite a bad option")

    monkeypatch.setattr(bench, "_run_here", no_run)
    monkeypatch.setattr(bench, "_run_isolated", no_run)
    assert _run(["--quick", "--random-init", "--models", "early", "--no-isolate", "-q", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""


@pytest.mark.slow
def test_bench_quick_isolated_with_fbrs_and_training(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CLICKSEG_SHARED_DATA", str(tmp_path / "none"))
    out = tmp_path / "b"
    rc = _run([
        "--quick", "--random-init", "--models", "early", "--sizes", "96", "--clicks", "2",
        "--brs-clicks", "1", "--train-iters", "1", "--train-batch", "2", "--out", str(out), "-q",
    ])
    assert rc == 0
    data = json.loads((out / "bench.json").read_text())
    row = data["rows"][0]
    # (audit 21: a failing f-BRS case and a lost training throughput passed the old checks)
    for mode in ("off", "fbrs"):
        assert "error" not in row[mode], row[mode].get("error")
    assert row["off"]["first_click_s"]["n"] == 1 and row["off"]["later_click_s"]["n"] == 1
    assert row["fbrs"]["first_click_s"]["n"] == 1 and row["fbrs"]["peak_rss_mb"] > 0
    assert 0 < row["off"]["rss_loaded_mb"] <= row["off"]["peak_rss_mb"]
    assert data["training"]["samples_per_s"] > 0, data["training"].get("note")


def test_loaded_rss_is_taken_before_the_image_is_read(tmp_path, monkeypatch):
    # regression: "(loaded)" was labelled torch + model but held the image and mask too
    from napari_clickseg import bench

    events = []
    real_load = np.load
    monkeypatch.setattr(bench, "rss_mb", lambda: events.append("rss") or 1.0)
    monkeypatch.setattr(np, "load", lambda *a, **k: events.append("load") or real_load(*a, **k))
    image, gt, _ = bench.sample_image(96)
    data = tmp_path / "s.npz"
    np.savez(data, image=image, gt=gt)
    case = {"data": str(data), "size": 96, "zoom_in": True, "device": "cpu", "dtype": "float32",
            "threads": 1, "random_init": True, "repeats": 1}
    rw = bench.run_case({**case, "model": "random_walker", "n_clicks": 1})
    assert events == ["rss", "load"]
    events.clear()
    bench.run_case({**case, "model": "early", "mode": "off", "clicks": rw["clicks"]})
    assert events == ["rss", "load"]


def test_training_throughput_uses_the_threads_given(monkeypatch):
    from napari_clickseg import bench
    from napari_clickseg.training import trainer

    seen = []

    def fake_train(cfg, log):
        seen.append(cfg.threads)
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer, "train", fake_train)
    image, gt, _ = bench.sample_image(96)
    from scipy import ndimage

    out = bench.training_throughput("early", image, ndimage.label(gt)[0], 1, 1, True, "cpu", crop_size=64, threads=1)
    assert seen == [1] and out["samples_per_s"] is None
