"""BatchNorm folding: same outputs, only conv -> BN pairs folded, the caller's model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_clickseg.engine import Predictor
from napari_clickseg.engine.fuse import fold_batchnorm
from napari_clickseg.models import create_model, list_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


@pytest.mark.parametrize("name", list_models())
def test_folding_keeps_outputs(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    _randomize_bn(model)
    k = model.inputs.click_channels
    image, maps, prev = torch.randn(1, 3, 64, 96), torch.rand(1, k, 64, 96), torch.rand(1, 1, 64, 96)

    def run(m):
        return m(image, maps, prev, m.encode_image(image) if m.caches_image_features else {})["logits"]

    ref = run(model).detach()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(model, lambda: run(model)) == n_bn  # every BN of ours follows a conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(run(model), ref, atol=1e-4, rtol=1e-4)


class Tapped(nn.Module):
    """conv -> bn, but the conv output is also used directly: that BN must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.a(x)
        z = self.bn_a(y) + y  # y used twice
        return self.bn_b(self.b(z)) + self.c(z)


def test_only_exclusive_pairs_are_folded():
    m = Tapped().eval()
    _randomize_bn(m)
    x = torch.randn(1, 2, 8, 8)
    ref = m(x).detach()
    assert fold_batchnorm(m, lambda: m(x)) == 1
    assert isinstance(m.bn_a, nn.BatchNorm2d) and isinstance(m.bn_b, nn.Identity)
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(Tapped().train(), lambda: None)
    t = Tapped().eval()

    def no_grad_run():
        with torch.no_grad():
            return t(x)

    with pytest.raises(ValueError, match="autograd"):
        fold_batchnorm(t, no_grad_run)


def test_predictor_folds_a_copy():
    torch.manual_seed(0)
    model = create_model("early")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = Predictor(model, device="cpu")
    assert p.model is not model and model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in p.model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
