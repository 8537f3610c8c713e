"""The contract every registered architecture fulfils (see ``models/base.py``).

Parametrised over ``list_models()``, so a new architecture is tested as soon as it registers.
Tiny inputs (64 px) and random weights keep it fast.
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from napari_clickseg.clicks import Click, encode_clicks, encoding_channels
from napari_clickseg.models import (
    ClickSegModel,
    ModelInputs,
    create_model,
    list_models,
    register_model,
)
from napari_clickseg.weights import load_weights, save_weights

MODELS = list_models()
SIZE = 64


def build(name: str, seed: int = 0, **kwargs) -> ClickSegModel:
    torch.manual_seed(seed)
    return create_model(name, **kwargs)


@pytest.fixture(scope="module")
def eval_models() -> dict[str, ClickSegModel]:
    """One eval-mode model per name, shared by the read-only tests."""
    return {name: build(name).eval() for name in MODELS}


def make_inputs(model: ClickSegModel, b: int = 1, size: tuple[int, int] = (SIZE, SIZE), seed: int = 0):
    """(image, click_maps, prev_mask) with real click encodings."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    image = torch.randn(b, 3, h, w, generator=g)
    maps = []
    for i in range(b):
        clicks = [
            Click(h // 2 + i, w // 3, True, 0),
            Click(h // 5, w - 7 - i, False, 1),
            Click(h - 9, w // 2 + 2 * i, True, 2),
        ]
        maps.append(torch.from_numpy(encode_clicks(clicks, (h, w), model.inputs.encoding, model.inputs.first_click)))
    click_maps = torch.stack(maps)
    prev_mask = torch.rand(b, 1, h, w, generator=g)
    return image, click_maps, prev_mask


def run(model, image, click_maps, prev_mask, **kw):
    with torch.no_grad():
        return model(image, click_maps, prev_mask, **kw)


def test_registry_is_populated():
    assert MODELS == sorted(MODELS)
    assert "early" in MODELS
    assert len(MODELS) == len(set(MODELS))


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'no_such_model'") as e:
        create_model("no_such_model")
    for name in MODELS:
        assert name in str(e.value)


def test_duplicate_registration_is_refused():
    class Dup(ClickSegModel):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_model(MODELS[0])(Dup)
    assert Dup.arch_name == ""
    assert list_models() == MODELS


@pytest.mark.parametrize("name", MODELS)
def test_bad_kwargs(name):
    with pytest.raises(ValueError, match=f"bad arguments for model '{name}'"):
        create_model(name, not_an_argument=1)


def test_bad_kwarg_values_name_the_model():
    # regression: train --set 'model_kwargs={"decoder_width": -3}' ended in a torch traceback
    with pytest.raises(ValueError, match="bad arguments for model 'early'.*negative dimension"):
        create_model("early", decoder_width=-3)
    # a zero width builds, then failed at the first forward pass
    with pytest.raises(ValueError, match="bad arguments for model 'early'.*no channels"):
        create_model("early", decoder_width=0)


@pytest.mark.parametrize("name", MODELS)
def test_declared_attributes(name, eval_models):
    model = eval_models[name]
    assert isinstance(model, ClickSegModel)
    assert model.arch_name == name and model.arch_kwargs == {}
    assert isinstance(model.inputs, ModelInputs)
    assert model.inputs.click_channels == encoding_channels(model.inputs.encoding, model.inputs.first_click)
    assert SIZE % model.size_divisor == 0
    norm = model.normalization
    assert len(norm["mean"]) == 3 and len(norm["std"]) == 3
    assert all(s > 0 for s in norm["std"])
    assert isinstance(model.fbrs_channels, int) and model.fbrs_channels > 0


@pytest.mark.parametrize("name", MODELS)
def test_kwargs_round_trip_through_json(name):
    """Constructor kwargs are stored in weights metadata as JSON and must rebuild the model."""
    cls = type(build(name))
    params = inspect.signature(cls.__init__).parameters
    kwargs = {
        k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty
    }
    model = create_model(name, **json.loads(json.dumps(kwargs)))
    assert json.loads(json.dumps(model.arch_kwargs)) == json.loads(json.dumps(kwargs))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build(name).parameters())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("b", [1, 2])
def test_forward_eval(name, b, eval_models):
    model = eval_models[name]
    image, clicks, prev = make_inputs(model, b)
    out = run(model, image, clicks, prev)
    assert out["logits"].shape == (b, 1, SIZE, SIZE)
    assert out["logits"].dtype == torch.float32
    for key, value in out.items():
        assert torch.isfinite(value).all(), key
        assert value.shape[0] == b, key
    # prev_mask=None means zeros
    torch.testing.assert_close(
        run(model, image, clicks, None)["logits"], run(model, image, clicks, torch.zeros_like(prev))["logits"]
    )


@pytest.mark.parametrize("name", MODELS)
def test_forward_non_square(name, eval_models):
    model = eval_models[name]
    size = (SIZE, SIZE + 32)
    image, clicks, prev = make_inputs(model, 1, size)
    out = run(model, image, clicks, prev)
    assert out["logits"].shape == (1, 1, *size)
    assert torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("name", MODELS)
def test_batch_items_are_independent_in_eval(name, eval_models):
    model = eval_models[name]
    image, clicks, prev = make_inputs(model, 2)
    both = run(model, image, clicks, prev)["logits"]
    for i in range(2):
        one = run(model, image[i : i + 1], clicks[i : i + 1], prev[i : i + 1])["logits"]
        torch.testing.assert_close(both[i : i + 1], one, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_train_mode_backward_reaches_every_parameter(name):
    model = build(name, seed=1).train()
    image, clicks, prev = make_inputs(model, 2, seed=1)
    target = (torch.rand(2, 1, SIZE, SIZE) > 0.5).float()
    out = model(image, clicks, prev)
    assert out["logits"].shape == (2, 1, SIZE, SIZE)
    loss = sum(
        torch.nn.functional.binary_cross_entropy_with_logits(v, target.expand_as(v))
        for k, v in out.items()
        if k.endswith("logits") and v.shape[-2:] == target.shape[-2:]
    )
    assert torch.isfinite(loss)
    loss.backward()
    missing = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient (unused?): {missing[:10]}"
    bad = [k for k, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:10]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_split_equals_forward(name, eval_models):
    model = eval_models[name]
    image, clicks, prev = make_inputs(model, 2)
    with torch.no_grad():
        feats = model.encode_image(image)
        assert isinstance(feats, dict)
        enc = model.encode(image, feats, clicks, prev)
        out = model.decode(enc, image)
        full = model(image, clicks, prev)
        cached = model(image, clicks, prev, image_feats=feats)
    torch.testing.assert_close(out["logits"], full["logits"])
    torch.testing.assert_close(cached["logits"], full["logits"])
    assert set(out) == set(full)


@pytest.mark.parametrize("name", MODELS)
def test_image_features_are_click_independent_and_not_mutated(name, eval_models):
    model = eval_models[name]
    image, clicks, prev = make_inputs(model, 1)
    _, other_clicks, _ = make_inputs(model, 2, seed=3)
    other_clicks = other_clicks[1:]
    with torch.no_grad():
        feats = model.encode_image(image)
    if model.caches_image_features:
        assert feats, "caches_image_features is True but encode_image returned nothing"
    before = {k: v.clone() for k, v in feats.items()}
    for c in (clicks, other_clicks, clicks):
        torch.testing.assert_close(
            run(model, image, c, prev, image_feats=feats)["logits"], run(model, image, c, prev)["logits"]
        )
    for k, v in feats.items():
        assert torch.equal(v, before[k]), f"encode/decode changed cached image feature {k!r} in place"


@pytest.mark.parametrize("name", MODELS)
def test_outputs_depend_on_clicks_and_prev_mask_as_declared(name, eval_models):
    model = eval_models[name]
    image, clicks, prev = make_inputs(model, 1)
    base = run(model, image, clicks, prev)["logits"]
    flipped = run(model, image, clicks.flip(-1), prev)["logits"]
    assert not torch.equal(base, flipped), "logits ignore the click maps"
    other_prev = run(model, image, clicks, 1 - prev)["logits"]
    if model.inputs.prev_mask:
        assert not torch.equal(base, other_prev), "inputs.prev_mask is True but prev_mask is ignored"
    else:
        torch.testing.assert_close(base, other_prev, msg="inputs.prev_mask is False but prev_mask is used")


@pytest.mark.parametrize("name", MODELS)
def test_fbrs_point(name, eval_models):
    """``enc["x"]`` has ``fbrs_channels`` channels, feeds the head, and decode leaves enc intact."""
    model = eval_models[name]
    image, clicks, prev = make_inputs(model, 1)
    with torch.no_grad():
        enc = model.encode(image, model.encode_image(image), clicks, prev)
    x = enc["x"]
    assert x.ndim == 4 and x.shape[1] == model.fbrs_channels
    before = {k: v.clone() for k, v in enc.items()}
    scale = torch.ones(1, model.fbrs_channels, 1, 1, requires_grad=True)
    bias = torch.zeros(1, model.fbrs_channels, 1, 1, requires_grad=True)
    out = model.decode(dict(enc, x=x * scale + bias), image)
    assert out["logits"].shape == (1, 1, SIZE, SIZE)
    out["logits"].sigmoid().mean().backward()
    assert scale.grad is not None and scale.grad.abs().sum() > 0
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    for k, v in enc.items():
        assert torch.equal(v, before[k]), f"decode changed enc[{k!r}] in place"
    with torch.no_grad():
        again = model.decode(enc, image)["logits"]
        shifted = model.decode(dict(enc, x=x * 1.5 + 0.1), image)["logits"]
    torch.testing.assert_close(again, run(model, image, clicks, prev)["logits"])
    assert not torch.equal(again, shifted), "decode ignores enc['x']"


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, eval_models, tmp_path):
    model = eval_models[name]
    path = tmp_path / f"{name}.safetensors"
    save_weights(model, path, trained=False)
    loaded, meta = load_weights(path, allow_untrained=True, arch=name)
    assert meta["arch"] == name and type(loaded) is type(model) and not loaded.training
    image, clicks, prev = make_inputs(model, 1)
    ref = run(model, image, clicks, prev)["logits"]
    got = run(loaded, image, clicks, prev)["logits"]
    # weights are stored in fp16: compare with a tolerance relative to the logits' scale
    tol = 2e-2 * max(1.0, ref.abs().max().item())
    assert (got - ref).abs().max().item() <= tol


@pytest.mark.parametrize("shape, r", [((1, 1, 9, 13), 2), ((2, 4, 40, 33), 3), ((1, 2, 5, 5), 3)])
def test_box_filter_is_the_clipped_window_mean(shape, r):
    from napari_clickseg.models.blocks import box_filter

    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ones = torch.ones((1, 1, *shape[-2:]))
    k = 2 * r + 1
    pool = torch.nn.functional.avg_pool2d
    reference = pool(x, k, 1, r, count_include_pad=True) / pool(ones, k, 1, r, count_include_pad=True)
    torch.testing.assert_close(box_filter(x, r), reference, rtol=1e-5, atol=1e-5)


def test_guided_filter_keeps_flat_maps_and_follows_guide_edges():
    from napari_clickseg.models.blocks import GuidedFilter, box_filter

    gf = GuidedFilter(3, radius=2).eval()
    image = torch.zeros(1, 3, 24, 24)
    image[..., 12:] = 1.0
    flat = torch.full((1, 1, 24, 24), 3.0)
    with torch.no_grad():
        torch.testing.assert_close(gf(flat, image), flat)
        # guide = the image's mean channel (0 left, 1 right)
        gf.guide[0].weight.fill_(1 / 3)
        gf.guide[0].bias.zero_()
        gf.guide[2].weight.zero_()
        gf.guide[2].weight[0, 0] = 1.0
        gf.guide[2].bias.zero_()
        step = torch.zeros(1, 1, 24, 24)
        step[..., 11:] = 1.0  # an edge one pixel off the image edge
        out = gf(step, image)[0, 0, 0]
        blurred = box_filter(step, 2)[0, 0, 0]
    # the largest jump of the output sits on the guide's edge, and is sharper than a plain blur's
    jumps = out.diff()
    assert int(jumps.argmax()) == 11
    assert jumps[11] > 2 * blurred.diff().max()
