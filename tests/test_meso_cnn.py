"""The CNN reparameterisation of the camera-centric height maps (paper Sec. 3.3, supplement Sec. 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from meso_toy import one_thread

from topograph.meso.models.cnn import EncoderDecoder, HeightCNN, parse_filters

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread

# supplement Sec. 6: architectures and their parameter counts (TensorFlow, BatchNorm moving statistics
# included, output = mean over the last block's channels)
PAPER = {
    (16, 16, 32, 32): 69_424,
    (16, 16, 16, 16): 28_080,
    (16, 16, 16, 32, 32): 76_912,
    (16, 16, 16, 16, 16): 35_568,
}


def _images(n=4, size=(96, 64), seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("filters", list(PAPER))
def test_architecture_matches_the_supplement(filters):
    net = EncoderDecoder(filters)
    ours = sum(p.numel() for p in net.parameters())
    norm_channels = 4 * sum(filters)  # two normalisations per block, encoder and decoder
    head = net.head.weight.numel() + net.head.bias.numel()
    # paper count = ours - our 1x1 output head + the two BatchNorm moving statistics per channel
    assert ours - head + 2 * norm_channels == PAPER[filters]
    assert len(net.blocks) == 2 * len(filters)
    assert parse_filters("16, 16,16,32,32") == (16, 16, 16, 32, 32)
    with pytest.raises(ValueError):
        parse_filters("16,0")
    with pytest.raises(ValueError):
        parse_filters("a,b")


def test_heights_start_flat_have_the_requested_size_and_do_not_depend_on_the_batch():
    imgs = _images()
    cnn = HeightCNN(4, (96, 64), (8, 8, 8), downsample=2, seed=0)
    cnn.set_inputs(imgs)
    out = cnn(torch.zeros(4, 3, 40, 60)).detach()
    assert out.shape == (4, 1, 40, 60)
    assert float(out.abs().max()) == 0.0  # zero output head: flat start
    torch.nn.init.normal_(cnn.net.head.weight, std=0.5)
    full = cnn(torch.zeros(4, 3, 40, 60)).detach()
    assert float(full.std()) > 1e-3
    # per-image normalisation: an image's map is the same whatever else is in its batch
    with torch.no_grad():
        alone = cnn(torch.zeros(1, 3, 40, 60), torch.tensor([2]))
        pair = cnn(torch.zeros(2, 3, 40, 60), torch.tensor([3, 2]))
    assert float((alone[0] - full[2]).abs().max()) < 1e-4 * float(full.abs().max())
    assert float((pair[1] - full[2]).abs().max()) < 1e-4 * float(full.abs().max())
    # the same seed gives the same network; another seed another one
    again = HeightCNN(4, (96, 64), (8, 8, 8), downsample=2, seed=0)
    other = HeightCNN(4, (96, 64), (8, 8, 8), downsample=2, seed=1)
    sd = cnn.state_dict()
    assert torch.equal(again.state_dict()["net.blocks.0.0.weight"], sd["net.blocks.0.0.weight"])
    assert not torch.equal(other.state_dict()["net.blocks.0.0.weight"], sd["net.blocks.0.0.weight"])
    assert cnn.regularization().item() == 0.0
    assert sum(p.numel() for p in cnn.groups()["height"]) == cnn.parameter_count()


def test_gradient_checkpointing_gives_the_same_values_and_gradients():
    imgs = _images()
    maps = []
    grads = []
    for ck in (False, True):
        cnn = HeightCNN(4, (96, 64), (8, 8, 16), downsample=1, seed=0, checkpoint=ck)
        cnn.set_inputs(imgs)
        torch.nn.init.normal_(cnn.net.head.weight, generator=torch.Generator().manual_seed(0), std=0.5)
        out = cnn(torch.zeros(4, 3, 64, 96))
        (out**2).mean().backward()
        maps.append(out.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in cnn.net.parameters()]))
    assert torch.allclose(maps[0], maps[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_the_network_prior_fits_plateaus_better_than_the_noise():
    """Fitting noisy card-like plateaus: the compressed network reproduces the plateaus and rejects
    most of the noise (deep-image-prior regularisation), while a free map would fit the noise exactly."""
    rng = np.random.default_rng(0)
    h, w = 64, 64
    truth = np.zeros((h, w), np.float32)
    truth[10:30, 8:30] = 4.0
    truth[36:58, 30:60] = 8.0
    img = np.full((h, w, 3), 90, np.uint8)  # the image shows the cards (texture edges)
    img[truth == 4.0] = (200, 80, 60)
    img[truth == 8.0] = (60, 160, 220)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    target = torch.from_numpy(truth + rng.normal(0, 1.0, truth.shape).astype(np.float32))
    cnn = HeightCNN(1, (w, h), (16, 16, 16), downsample=1, output_scale=4.0, seed=0)
    cnn.set_inputs(img[None])
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = ((cnn(torch.zeros(1, 3, h, w))[0, 0] - target) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        est = cnn(torch.zeros(1, 3, h, w))[0, 0].numpy()
    err = est - truth
    inner = np.zeros_like(truth, bool)
    inner[14:26, 12:26] = inner[40:54, 34:56] = True
    inner[3:8, 36:60] = True  # background
    assert np.sqrt(np.mean(err[inner] ** 2)) < 0.5  # plateaus within half the noise level
    for lo, hi, val in ((14, 26, 4.0), (40, 54, 8.0)):
        sl = est[lo:hi, 12:26] if val == 4.0 else est[lo:hi, 34:56]
        assert abs(float(sl.mean()) - val) < 0.3


def test_set_maps_rebases_the_heights_without_touching_the_weights():
    cnn = HeightCNN(3, (96, 64), (8, 8), downsample=2, seed=0)
    cnn.set_inputs(_images(3))
    torch.nn.init.normal_(cnn.net.head.weight, std=0.5)
    before = cnn.maps
    weights = [p.detach().clone() for p in cnn.net.parameters()]
    target = 0.9 * before - 2.0  # e.g. a gauge change: scale and offset
    cnn.set_maps(target)
    assert torch.allclose(cnn.maps, target, atol=1e-5)
    assert torch.allclose(cnn(torch.zeros(3, 3, 32, 48)), target, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(weights, cnn.net.parameters(), strict=True))
    assert "correction" in cnn.state_dict()


def test_tiny_network_inputs_are_padded_to_a_usable_bottleneck():
    cnn = HeightCNN(2, (64, 48), (8, 8, 8, 8, 8), downsample=8, seed=0)  # 8 x 6 input, 5 halvings
    cnn.set_inputs(_images(2, (64, 48)))
    torch.nn.init.normal_(cnn.net.head.weight, std=0.5)
    out = cnn(torch.zeros(2, 3, 12, 16))
    assert out.shape == (2, 1, 12, 16) and bool(torch.isfinite(out).all())


def test_levelling_a_cnn_model_equals_levelling_its_explicit_maps():
    """The gauge fix (dominant plane -> h = 0) moves the cameras and rebases the CNN's heights exactly as
    it does for explicit height maps holding the same heights; the network weights stay as they are."""
    from topograph.meso.config import MesoConfig, replace_settings
    from topograph.meso.gauge import level_model
    from topograph.meso.reconstruct import build_model

    n, size = 4, (96, 64)
    rng = np.random.default_rng(2)
    positions = rng.normal(0.0, 10.0, (n, 2))
    cfg = MesoConfig()
    cfg = replace_settings(
        cfg, {"distortion.model": "none", "heights.cnn_filters": (8, 8, 8), "heights.cnn_downsample": 2}
    )
    cnn_model = build_model(n, size, 120.0, positions, cfg)
    cnn = cnn_model.heights
    assert isinstance(cnn, HeightCNN)
    cnn.set_inputs(_images(n, size))
    torch.nn.init.normal_(cnn.net.head.weight, std=0.5)
    cfg = replace_settings(cfg, {"heights.model": "tv", "heights.downsample": 2})
    tv_model = build_model(n, size, 120.0, positions, cfg)
    with torch.no_grad():
        tv_model.pose.tilt.copy_(torch.as_tensor(rng.normal(0.0, 0.01, (n, 2)), dtype=torch.float32))
        cnn_model.pose.tilt.copy_(tv_model.pose.tilt)
        tv_model.heights.maps.copy_(cnn.maps)
    assert float(cnn.maps.abs().max()) > 1.0
    weights = [p.detach().clone() for p in cnn.net.parameters()]
    before = cnn.maps
    plane = (0.01, -0.006, 0.5)
    level_model(cnn_model, plane, size)
    level_model(tv_model, plane, size)
    assert cnn_model.heights is cnn
    for name in ("position", "log_scale", "tilt"):
        assert torch.allclose(getattr(cnn_model.pose, name), getattr(tv_model.pose, name), atol=1e-6), name
    assert torch.allclose(cnn.maps, tv_model.heights.maps, atol=1e-5)
    assert float((cnn.maps - before).abs().max()) > 0.4  # the heights did change (plane offset 0.5 and slopes)
    assert all(torch.equal(a, b) for a, b in zip(weights, cnn.net.parameters(), strict=True))
