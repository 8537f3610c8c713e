"""Training-time validation: the protocol's robot user through the engine, on a fixed sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_clickseg.data.folder import FolderDataset
from napari_clickseg.engine import Predictor
from napari_clickseg.evaluation import metrics as M
from napari_clickseg.evaluation.runner import evaluate
from napari_clickseg.models import create_model
from napari_clickseg.training.config import TrainConfig
from napari_clickseg.training.validation import STOP_IOU, improves, validate, validation_sets


def _labels_folder(root: Path, n_images: int, per_image: int, seed: int) -> Path:
    """Images with ``per_image`` bright squares each, as an instance map."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n_images):
        lab = np.zeros((64, 64), np.uint16)
        for k in range(per_image):
            r, c = 4 + 20 * k, int(rng.integers(4, 44))
            lab[r:r + 14, c:c + 14] = k + 1
        img = (rng.random((64, 64)) * 50 + (lab > 0) * 150).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(lab).save(root / "labels" / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[FolderDataset]:
    root = tmp_path_factory.mktemp("val")
    return [
        FolderDataset(_labels_folder(root / "a", 3, 3, 0)),  # 9 objects
        FolderDataset(_labels_folder(root / "b", 1, 2, 1)),  # 2 objects
    ]


def test_sample_is_spread_over_folders_fixed_and_capped(folders):
    sets = validation_sets(folders, 6, seed=3)
    assert [len(s.items) for s in sets] == [4, 2]  # the small folder gives all it has
    again = validation_sets(folders, 6, seed=3)
    assert [s.items for s in sets] == [s.items for s in again]
    assert [len(s.items) for s in validation_sets(folders, 100, seed=3)] == [9, 2]
    assert [len(s.items) for s in validation_sets(folders, 1, seed=3)] == [1]


def test_scores_are_the_protocol_evaluation_of_the_same_objects(folders):
    torch.manual_seed(0)
    model = create_model("early", decoder_width=8)
    sets = validation_sets(folders, 4, seed=0)
    engine = {"min_crop_size": 32}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = validate(model, sets, engine=engine, normalization=model.normalization, max_clicks=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched
    curves = []
    for s in sets:  # what `napari-clickseg evaluate` gives for the same objects and engine
        out = evaluate(Predictor(model, **engine), s, max_clicks=3, stop_iou=STOP_IOU)
        own = [M.fill_curve(o["ious"], 3) for o in out["objects"]]
        assert res[f"noc@90 {s.name}"] == pytest.approx(np.mean([M.noc(c, 0.9, 3) for c in own]))
        curves += own
    assert res["objects"] == 4 == len(curves)
    assert res["noc@90"] == pytest.approx(np.mean([M.noc(c, 0.9, 3) for c in curves]))
    assert res["iou@1"] == pytest.approx(np.mean([c[0] for c in curves]))
    assert res["auc"] == pytest.approx(M.auc(M.miou_curve(curves, 3)))


def test_fewer_clicks_win_then_the_higher_curve():
    best = {"noc@90": 5.0, "auc": 0.8}
    assert improves({"noc@90": 4.9, "auc": 0.1}, best)
    assert not improves({"noc@90": 5.1, "auc": 0.99}, best)
    assert improves({"noc@90": 5.0, "auc": 0.81}, best)
    assert not improves({"noc@90": 5.0, "auc": 0.8}, best)  # a tie keeps the earlier weights
    assert improves({"noc@90": 20.0, "auc": 0.1}, {"step": -1, "metrics": {}})  # nothing scored yet
    assert improves({"noc@90": 20.0, "auc": 0.1}, {"score": 0.9, "step": 3, "metrics": {}})  # older runs


def test_older_run_configs_still_load(tmp_path):
    cfg = TrainConfig(model="early", train_dirs=["x"], out="y").to_dict()
    cfg["val_batch_size"] = 8  # the crop validation's batch size, retired
    assert TrainConfig.from_dict(cfg).val_objects == 64
    cfg["no_such_field"] = 1
    with pytest.raises(ValueError, match="no_such_field"):
        TrainConfig.from_dict(cfg)
