"""scripts/click_response.py: wrong-way clicks are counted by the sign the click asks for."""

from __future__ import annotations

import numpy as np
import pytest


class GrowingDisk:
    """A stand-in predictor: a disk whose radius every click grows, negative ones too."""

    def __init__(self, shape):
        self.yy, self.xx = np.mgrid[: shape[0], : shape[1]]

    def set_image(self, image):
        self.centre = (image.shape[0] // 2, image.shape[1] // 2)

    def predict(self, clicks, structural_integrity=False):
        radius = 8 + 3 * sum(c.positive for c in clicks) + 2 * sum(not c.positive for c in clicks)
        disk = (self.yy - self.centre[0]) ** 2 + (self.xx - self.centre[1]) ** 2 <= radius**2
        return disk.astype(np.float32)


def test_negative_clicks_that_grow_the_mask_are_wrong_way(load_script):
    mod = load_script("click_response")
    shape = (64, 64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    gt = (yy - 32) ** 2 + (xx - 32) ** 2 <= 15**2
    image = gt.astype(np.float32)
    out = mod.click_response(GrowingDisk(shape), [(image, gt)], max_objects=1, clicks=8, tolerance=0.001)
    pos, neg = out["positive"], out["negative"]
    # radius 11, 14, 17 after the three positive clicks; then too big, and every negative click grows it
    assert pos["clicks"] == 2 and pos["wrong_way"] == 0.0 and pos["median_area_change"] > 0
    assert neg["clicks"] == 5 and neg["wrong_way"] == 1.0 and neg["median_area_change"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "no/such/folder"], "dataset folder not found"),
        (["--model", "no_such_model", "--data", "."], "neither a shipped model"),
        (["--data", ".", "--clicks", "1"], "--clicks must be >= 2"),
    ],
)
def test_bad_arguments_exit_with_the_reason(load_script, monkeypatch, capsys, args, message):
    monkeypatch.setattr("sys.argv", ["click_response", *args])
    with pytest.raises(SystemExit):
        load_script("click_response").main()
    assert message in capsys.readouterr().err
