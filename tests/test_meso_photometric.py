"""The closed-form gain fit of the photometric rounds (topograph.meso.optimise.photometric)."""

from __future__ import annotations

import numpy as np
import torch
from test_meso_functional import model_at_truth

from topograph.meso.optimise.batching import footprint_grid, make_batched_level
from topograph.meso.optimise.photometric import fit_gains, pair_log_gains, solve_log_gains
from topograph.synth.meso import MesoSynthConfig, render_meso_sequence


def test_log_gains_from_pairs_ignore_a_highlight_and_unusable_cells():
    """Six photos of one scene with log exposures up to +-0.3 per channel; one photo carries a highlight
    (+0.5 in log) on a fifth of the cells, another is unusable on half of them. The pair medians and the
    least-squares solve give back minus the exposures (the correcting gains, mean 0) to 1e-12."""
    gen = np.random.default_rng(1)
    n = 6
    exposure = gen.uniform(-0.3, 0.3, (n, 3))
    exposure -= exposure.mean(0)
    scene = np.log(gen.uniform(0.1, 0.9, (3, 500)))
    log_values = np.stack([scene + exposure[i][:, None] for i in range(n)])
    log_values[2, :, :100] += 0.5
    usable = np.ones((n, 500), bool)
    usable[0, :250] = False
    pairs, ratios, counts = pair_log_gains(log_values, usable)
    assert len(pairs) == n * (n - 1) // 2
    gains = solve_log_gains(n, pairs, ratios, counts)
    assert np.abs(gains + exposure).max() < 1e-12
    assert np.abs(gains.sum(0)).max() < 1e-12


def test_a_photo_without_overlap_keeps_gain_zero():
    gen = np.random.default_rng(2)
    log_values = np.log(gen.uniform(0.1, 0.9, (3, 3, 200)))
    usable = np.ones((3, 200), bool)
    usable[2] = False
    pairs, ratios, counts = pair_log_gains(log_values, usable)
    assert [tuple(p) for p in pairs] == [(0, 1)]
    assert np.all(solve_log_gains(3, pairs, ratios, counts)[2] == 0.0)


def test_gains_of_a_rendered_sequence_with_exposure_and_a_highlight():
    """A rendered 3 x 2 sweep with auto exposure (+-30 %), white balance (+-15 %) and a specular highlight
    (peak 0.4, up to 1.3 x that after the exposure: clipped), the cameras at the truth: the fitted log gains
    are within 0.04 RMS of the renderer's (centred; measured 0.026: the vignetting differs between the ends of
    an overlap), against 0.17 RMS for no correction; a second fit keeps them and the biases."""
    cfg = MesoSynthConfig(
        image_size=(240, 180), raster=(3, 2), seed=4, exposure_jitter=0.3, white_balance_jitter=0.15, specular=0.4
    )
    seq = render_meso_sequence(cfg)
    truth = seq.truth
    model, _ = model_at_truth(truth)
    level = make_batched_level(seq.images, 2)
    rng = np.random.default_rng([cfg.seed, 2])  # the renderer's effects stream (synth/meso.py)
    exposure = []
    for _ in range(truth.n_images):
        gain = 1.0 + rng.uniform(-cfg.exposure_jitter, cfg.exposure_jitter)
        wb = 1.0 + rng.uniform(-cfg.white_balance_jitter, cfg.white_balance_jitter, 3)
        rng.uniform(0.0, np.pi)
        exposure.append(np.log(gain * wb))
    exposure = np.array(exposure)
    exposure -= exposure.mean(0)
    fit_gains(model, level, footprint_grid(model, level))
    with torch.no_grad():
        correction = (model.pose.log_gain - model.pose.log_gain.mean())[:, None] + model.pose.colour()
    error = np.sqrt(np.mean((correction.numpy() + exposure) ** 2))
    print(f"log gain error {error:.4f} RMS, uncorrected {np.sqrt(np.mean(exposure**2)):.4f}")
    assert np.sqrt(np.mean(exposure**2)) > 0.1
    assert error < 0.04
    assert float(model.pose.bias.detach().abs().max()) == 0.0
    # a second fit finds the gains where the first left them and keeps every term (a continuing round's biases)
    with torch.no_grad():
        model.pose.bias.fill_(0.01)
    assert fit_gains(model, level, footprint_grid(model, level)) < 1e-6
    assert abs(float(model.pose.bias.detach().min()) - 0.01) < 1e-6
