"""Losses on hand-made cases: a perfect prediction scores lower than a wrong one; gradients are finite."""

from __future__ import annotations

import pytest
import torch

from napari_clickseg.clicks import Click
from napari_clickseg.training.losses import DEFAULT_LOSS, LOSSES, click_weights, get_loss


def _case():
    gt = torch.zeros(2, 1, 32, 32)
    gt[0, 0, 8:20, 8:20] = 1
    gt[1, 0, 4:10, 20:30] = 1
    ignore = torch.zeros_like(gt, dtype=torch.bool)
    ignore[:, :, 0, :] = True
    clicks = [[Click(14, 14, True), Click(28, 28, False)], [Click(7, 25, True)]]
    return gt, ignore, clicks


def _out(logits: torch.Tensor) -> dict:
    return {"logits": logits, "aux_logits": logits.clone()}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_perfect_beats_wrong_and_gradients_finite(name):
    gt, ignore, clicks = _case()
    loss = LOSSES[name]
    perfect = (gt * 2 - 1) * 8
    wrong = -perfect
    half = torch.zeros_like(gt)
    lp = loss(_out(perfect), gt, ignore, clicks)
    lw = loss(_out(wrong), gt, ignore, clicks)
    lh = loss(_out(half), gt, ignore, clicks)
    assert lp.ndim == 0 and float(lp) < float(lh) < float(lw)
    logits = torch.zeros_like(gt, requires_grad=True)
    loss(_out(logits), gt, ignore, clicks).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignored_pixels_do_not_count(name):
    gt, ignore, clicks = _case()
    a = (gt * 2 - 1) * 8
    b = a.clone()
    b[:, :, 0, :] = -b[:, :, 0, :] + 3  # change only ignored pixels (no click lies there)
    loss = LOSSES[name]
    assert torch.allclose(loss(_out(a), gt, ignore, clicks), loss(_out(b), gt, ignore, clicks))


def test_balanced_bce_balances_classes():
    gt = torch.zeros(1, 1, 10, 10)
    gt[..., :1, :1] = 1  # 1 % foreground
    ignore = torch.zeros_like(gt, dtype=torch.bool)
    miss_fg = torch.full_like(gt, -4.0)  # predicts all background
    miss_bg = torch.full_like(gt, 4.0)  # predicts all foreground
    # plain BCE barely punishes missing the small object; balanced BCE punishes both alike
    bce, bal = LOSSES["bce"], LOSSES["balanced_bce"]
    assert float(bce({"logits": miss_fg}, gt, ignore, [[]])) < 0.2 * float(bce({"logits": miss_bg}, gt, ignore, [[]]))
    a = float(bal({"logits": miss_fg}, gt, ignore, [[]]))
    b = float(bal({"logits": miss_bg}, gt, ignore, [[]]))
    assert a == pytest.approx(b, rel=1e-4)


def test_click_weights_fca_constants():
    w = click_weights([[Click(0, 0, True), Click(0, 50, False)]], (1, 300))
    assert w[0, 0, 0, 0] == pytest.approx(0.8 + 2.0)  # on a click
    assert w[0, 0, 0, 250] == pytest.approx(0.8)  # beyond tau = 100 from every click
    assert w[0, 0, 0, 100] == pytest.approx(0.8 + 2.0 * 0.5)  # 50 px from the click at col 50
    first = click_weights([[Click(0, 50, False), Click(0, 0, True), Click(0, 200, True)]], (1, 300), first_only=True)
    assert first[0, 0, 0, 0] == pytest.approx(2.8) and first[0, 0, 0, 200] == pytest.approx(0.8)


def test_fca_loss_uses_aux_output():
    gt, ignore, clicks = _case()
    perfect = (gt * 2 - 1) * 8
    with_bad_aux = LOSSES["fca"]({"logits": perfect, "aux_logits": -perfect}, gt, ignore, clicks)
    with_good_aux = LOSSES["fca"]({"logits": perfect, "aux_logits": perfect}, gt, ignore, clicks)
    assert float(with_bad_aux) > float(with_good_aux) + 1.0


def test_defaults_and_errors():
    assert DEFAULT_LOSS["fca"] == "fca" and DEFAULT_LOSS["hires"] == "soft_iou_click"
    assert get_loss(None, "early") is LOSSES["balanced_bce"]
    with pytest.raises(ValueError, match="unknown loss 'nope'; valid: .*balanced_bce"):
        get_loss("nope")


def test_nfl_matches_its_formula():
    """RITM's normalized focal loss, written out pixel by pixel."""
    gt, ignore, clicks = _case()
    logits = torch.randn(gt.shape, generator=torch.Generator().manual_seed(0)) * 3
    got = float(LOSSES["nfl"]({"logits": logits}, gt, ignore, clicks))
    total = 0.0
    for b in range(gt.shape[0]):
        valid = ~ignore[b, 0]
        p = torch.sigmoid(logits[b, 0].double())
        pt = torch.where(gt[b, 0] > 0.5, p, 1 - p)[valid]
        alpha = torch.where(gt[b, 0] > 0.5, 0.5, 0.5)[valid]
        beta = (1 - pt) ** 2
        beta = beta * valid.sum() / beta.sum()
        total += float((-alpha * beta * torch.log(pt)).sum() / valid.sum())
    assert got == pytest.approx(total / gt.shape[0], rel=1e-4)


def test_nfl_stays_normalised_when_the_model_is_confident():
    # regression (audit 28): with epsilon 1e-6 the focal weights stopped summing to the pixel count at logit +-12
    gt = torch.zeros(1, 1, 320, 320)
    gt[..., 100:200, 100:200] = 1
    ignore = torch.zeros_like(gt, dtype=torch.bool)
    losses = [float(get_loss("nfl", "hires")({"logits": (2 * gt - 1) * z}, gt, ignore, [[]])) for z in (6.0, 14.0)]
    # a confident, correct model: the normalised loss is alpha (0.5) times the per-pixel log-loss,
    # not that scaled down by a vanishing weight sum
    for z, loss in zip((6.0, 14.0), losses):
        assert loss == pytest.approx(0.5 * float(torch.nn.functional.softplus(torch.tensor(-z))), rel=0.05)
