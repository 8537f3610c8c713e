"""`napari-clickseg average` and the model-card lines scripts/ship_weights.py writes for a mean of runs."""

from __future__ import annotations

import pytest
import torch

from napari_clickseg.models import create_model
from napari_clickseg.weights import load_weights, read_metadata, save_weights


def _run(cfg: dict, iterations: int, earlier: list) -> dict:
    return {"config": cfg, "iterations": iterations, "samples_seen": 8 * iterations, "wall_time_s": 600,
            "hardware": {"device": "cpu"}, "earlier_stages": earlier}


@pytest.fixture
def runs(tmp_path):
    """Two fine-tunes of one start, as the trainer writes them (with their earlier stages)."""
    start = _run({"init": "imagenet", "loss": "nfl"}, 100, [])
    start.pop("earlier_stages")
    paths = []
    for i, extra in enumerate([{}, {"corrupt_prev": 0.3}]):
        torch.manual_seed(i)
        cfg = {"init": "weights/early.safetensors", "loss": "nfl", "frozen_bn": True, **extra}
        path = tmp_path / f"run{i}.safetensors"
        save_weights(create_model("early", decoder_width=8), path, training=_run(cfg, 10 + i, [start]))
        paths.append(path)
    return paths


def test_average_command_writes_the_mean_and_keeps_existing_files(runs, tmp_path, capsys):
    from napari_clickseg.cli import main

    out = tmp_path / "soup.safetensors"
    assert main(["average", *map(str, runs), "--out", str(out)]) == 0
    assert "mean of 2 files" in capsys.readouterr().out
    model, _ = load_weights(out)
    a, b = (load_weights(p)[0].state_dict() for p in runs)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a[k] + b[k]) / 2, atol=2e-3, rtol=1e-3)
    before = out.read_bytes()
    for args, message in [
        ([*map(str, runs), "--out", str(out)], "exists; pass --overwrite"),
        ([str(runs[0]), "--out", str(runs[0]), "--overwrite"], "is one of the inputs"),
        ([str(runs[0]), "--out", str(tmp_path / "one.safetensors")], "at least two"),
        ([str(runs[0]), str(tmp_path / "." / runs[0].name), "--out", str(tmp_path / "two.safetensors")],
         "given twice"),
        ([*map(str, runs), "--out", str(tmp_path), "--overwrite"], "is a folder"),
    ]:
        assert main(["average", *args]) == 2
        assert message in capsys.readouterr().err
    assert out.read_bytes() == before


def test_card_lists_the_common_history_then_each_averaged_run(runs, tmp_path, load_script):
    from napari_clickseg.cli import main

    assert main(["average", *map(str, runs), "--out", str(tmp_path / "soup.safetensors")]) == 0
    ship = load_script("ship_weights")
    stages = ship.stages(read_metadata(tmp_path / "soup.safetensors"))
    assert len(stages) == 2 and stages[0]["iterations"] == 100
    line = ship._stage(stages[1])
    assert line.startswith("the mean of the weights of 2 runs from the same start")
    assert "(a) init `weights/early.safetensors`" in line and "10 iterations" in line
    assert "(b)" in line and "11 iterations" in line and "30% of click sequences started from a corrupted" in line
    assert line.count("BatchNorm statistics frozen") == 2


def test_card_names_the_validation_that_chose_the_weights(load_script):
    ship = load_script("ship_weights")
    line = ship._selection_scores({"val_noc@90": 5.25, "val_iou@1": 0.8, "val_iou@2": 0.85, "val_objects": 64.0,
                                   "note": "text"})
    assert line.startswith("Selection scores (64 val objects on full images through the engine, 2 clicks")
    assert "val_noc@90 5.250" in line and "val_objects" not in line and "text" not in line
    old = ship._selection_scores({"val_crops_score": 0.9, "val_crops_iou@1": 0.8, "val_crops_objects": 64.0})
    assert old.startswith("Selection scores (64 val objects on crops, 1 clicks") and "val_crops_score 0.900" in old


def test_ship_weights_keeps_the_default_and_refuses_unknown_ones(runs, tmp_path, load_script, monkeypatch,
                                                                   capsys):
    import json

    ship = load_script("ship_weights")
    weights = tmp_path / "weights"
    weights.mkdir()
    for name, src in zip(("early", "hires"), runs):
        (weights / f"{name}.safetensors").write_bytes(src.read_bytes())
    (weights / "manifest.json").write_text(json.dumps({"default": "hires", "models": {}}))
    monkeypatch.setattr(ship, "WEIGHTS", weights)
    # regression: without evaluations the first model became the default
    assert ship.main(["--models", "early", "hires"]) == 0
    assert json.loads((weights / "manifest.json").read_text())["default"] == "hires"
    before = (weights / "manifest.json").read_bytes()
    with pytest.raises(SystemExit):  # regression: a typo was written as the default
        ship.main(["--models", "early", "hires", "--default", "hirse"])
    assert "'hirse' is not one of --models" in capsys.readouterr().err
    assert (weights / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("bad", [
    ["--status", "early"], ["--eval", "no-such-folder"], ["--engine", 'early={"zoom": 2}'], ["--copy", "fca"],
    ["--engine", 'early={"min_crop_sise": null}'],  # a misspelt name to remove (review, session 21)
])
def test_ship_weights_checks_every_argument_before_writing(runs, tmp_path, load_script, monkeypatch, capsys, bad):
    # regression: the weights were copied first, then a bad --status / --eval / --engine aborted
    # the run and left weights/ with files the manifest's sha256 no longer matched
    import json

    ship = load_script("ship_weights")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "early.safetensors").write_bytes(runs[0].read_bytes())
    (weights / "manifest.json").write_text(json.dumps({"default": "early", "models": {}}))
    new_run = tmp_path / "runs" / "early"
    new_run.mkdir(parents=True)
    (new_run / "best.safetensors").write_bytes(runs[1].read_bytes())
    monkeypatch.setattr(ship, "WEIGHTS", weights)
    before = {p.name: p.read_bytes() for p in weights.iterdir()}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        ship.main(["--models", "early", "--copy", "early", "--runs", str(tmp_path / "runs"), *bad])
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == before


def test_ship_weights_reads_every_source_before_copying_any(runs, tmp_path, load_script, monkeypatch, capsys):
    # regression (audit 21): with a truncated runs/fca/best.safetensors, early.safetensors was
    # already replaced when reading fca failed, and the manifest's sha256 no longer matched it
    import json

    ship = load_script("ship_weights")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "early.safetensors").write_bytes(runs[0].read_bytes())
    (weights / "manifest.json").write_text(json.dumps({"default": "early", "models": {}}))
    for name, data in (("early", runs[1].read_bytes()), ("fca", runs[1].read_bytes()[:200])):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "best.safetensors").write_bytes(data)
    monkeypatch.setattr(ship, "WEIGHTS", weights)
    before = {p.name: p.read_bytes() for p in weights.iterdir()}
    with pytest.raises(SystemExit):
        ship.main(["--models", "early", "fca", "--copy", "early", "fca", "--runs", str(tmp_path / "runs")])
    assert "--copy fca:" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == before

