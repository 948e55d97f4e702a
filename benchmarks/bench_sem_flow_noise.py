"""Is the dense flow's error noise, and can a local refinement along the epipolar line lower it? (issue 16)

    python benchmarks/bench_sem_flow_noise.py "low contrast" [--size 1024] [--noise 0.02]
    python benchmarks/bench_sem_flow_noise.py "low contrast" --dis variational_refinement_alpha=400 ...
    python benchmarks/bench_sem_flow_noise.py "low contrast" --noise-adapted [--dis ...]
    python benchmarks/bench_sem_flow_noise.py "low contrast" [--noise-adapted] [--base KEY=VALUE,...] \
        --prefilter nlm:0.8 bilateral:3:2 gauss:1 up:2

Renders the case of ``bench_sem_conventions.py`` whose name contains the argument (its true cameras give
every reference pixel's true match), runs the SEM dense stage's flow (reference → first other view) and
prints the flow's error along the affine epipolar direction ``e`` on the grain (RMS, median |error|, and
RMS on the interior ≥ 20 px from the outline) for:

* the flow as the dense stage computes it;
* an epipolar Lucas–Kanade refinement: with the cross-line component fixed, the along-line offset δ of a
  window (Gaussian σ) around each pixel minimises ``Σ_y g_σ [I(y) − a − b J(y + u(y) + δ e)]²`` (gain ``b``
  = ratio of the windows' standard deviations, bias ``a`` their means), linearised
  ``δ = (cov(I, G) − b cov(W, G)) / (b var(G))`` with ``W = J(y + u(y))``, ``G = ∇J(y + u(y)) · e``; the new
  match is the window average of the current along-line flow plus δ, iterated. Started from
  the flow and from the *true* match (where it settles shows the refinement's own optimum);
* Gaussian pre-blur of both images before the flow;
* a robust local-plane fit of the along-line flow (:func:`topograph.geometry.local_regression.local_linear_smooth`);
* bidirectional fusion: the backward flow (other view → reference, same settings) inverted at the forward
  match, ``u_b(x) = −b(x + u(x))``, alone and averaged with the forward flow (with the correlation of the
  two errors: the other image as template gives partly independent noise only).

With ``--dis`` only the dense stage's flow and its variants with the given flow settings (fields of
:class:`topograph.matching.config.DenseConfig`, several joined by commas, e.g. ``patch_size=12,patch_stride=3``)
are run, each row with the share of the grain's pixels the flow keeps (forward–backward consistent). With
``--prefilter`` the flow runs on both images denoised first (non-local means ``nlm:K`` with ``h = K σ``, as
:mod:`topograph.sem.prefilter` does; ``bilateral:K:S``; ``gauss:S``) or upsampled (``up:F``, the flow sampled
back at the pixel centres); ``--base`` changes the flow settings of every row.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import yaml
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from bench_sem_conventions import named_case, render_case  # noqa: E402

from topograph.geometry.local_regression import local_linear_smooth  # noqa: E402
from topograph.matching.dense import dense_flow  # noqa: E402
from topograph.sem.config import SemConfig  # noqa: E402
from topograph.sem.dense import flow_config  # noqa: E402
from topograph.sem.image_noise import noise_adapted_smoothness, noise_sigma, stretched_noise_grey  # noqa: E402
from topograph.sem.prefilter import nlm_denoise, stretch_limits  # noqa: E402
from topograph.synth.sem import cast_rays  # noqa: E402


def epipolar_lk(
    ref: np.ndarray, other: np.ndarray, flow: np.ndarray, valid: np.ndarray, e: np.ndarray, sigma: float
) -> np.ndarray:
    """One epipolar Lucas–Kanade step (module docstring): the flow with its along-line part replaced."""
    h, w = ref.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    e = e.astype(np.float32)
    jd = (cv2.Sobel(other, cv2.CV_32F, 1, 0, ksize=3) * e[0] + cv2.Sobel(other, cv2.CV_32F, 0, 1, ksize=3) * e[1]) / 8
    m = valid.astype(np.float32)

    def avg(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(m * x, (0, 0), sigma) / (cv2.GaussianBlur(m, (0, 0), sigma) + 1e-9)

    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    wj = cv2.remap(other, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    g = cv2.remap(jd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mi, mw, mg = avg(ref), avg(wj), avg(g)
    var_i, var_w, var_g = avg(ref * ref) - mi * mi, avg(wj * wj) - mw * mw, avg(g * g) - mg * mg
    cov_ig, cov_wg = avg(ref * g) - mi * mg, avg(wj * g) - mw * mg
    b = np.sqrt(np.maximum(var_i, 0) / np.maximum(var_w, 1e-12))
    delta = np.clip(np.nan_to_num((cov_ig - b * cov_wg) / (b * var_g + 1e-12)), -1.0, 1.0)
    along = flow @ e
    new = np.where(valid, avg(along) + delta, along)
    return (flow + (new - along)[..., None] * e).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--noise-adapted", action="store_true", help="the dense stage's noise-adapted smoothness")
    ap.add_argument("--dis", nargs="*", default=None, help="flow-setting variants key=value[,key=value]")
    ap.add_argument("--base", default=None, help="flow settings of every row, key=value[,key=value]")
    ap.add_argument(
        "--prefilter",
        nargs="*",
        default=None,
        help="denoising before the flow: nlm:H_FACTOR[:TEMPLATE:SEARCH], bilateral:COLOUR_FACTOR:SIGMA_PX, "
        "gauss:SIGMA_PX, up:FACTOR (the flow on upsampled images)",
    )
    args = ap.parse_args()
    name, case, kw = named_case(args.case)
    n = len(case.tilts_deg)
    ds = render_case(case, kw, args.size, noise=args.noise)
    ref = int(np.argsort(ds.tilts_deg)[n // 2])
    k = next(v for v in range(n) if v != ref)
    img_r, img_k = (np.asarray(ds.images[v], dtype=np.float32) for v in (ref, k))
    h, w = img_r.shape
    yy, xx = np.mgrid[0:h, 0:w]
    pix = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    hits = cast_rays(ds.surface, ds.cameras[ref], pix)
    cam_k = ds.cameras[k]
    true = (hits.points @ cam_k.matrix.T + cam_k.translation).reshape(h, w, 2) - np.stack([xx, yy], -1)
    on = hits.on_grain.reshape(h, w) & np.isfinite(true).all(axis=2)
    inner = ndimage.distance_transform_edt(on) >= 20  # noqa: PLR2004
    mr = ds.cameras[ref].matrix
    e = cam_k.matrix @ np.cross(mr[0], mr[1])
    e /= np.linalg.norm(e)
    true = np.nan_to_num(true).astype(np.float32)
    cfg = flow_config(SemConfig().dense, h * w)
    if args.noise_adapted:  # the dense stage's smoothness for noisy images (session 14)
        alpha = noise_adapted_smoothness(cfg.variational_refinement_alpha, stretched_noise_grey(img_r))
        cfg = replace(cfg, variational_refinement_alpha=alpha)
    if args.base:
        cfg = replace(cfg, **{key: yaml.safe_load(v) for key, v in (kv.split("=", 1) for kv in args.base.split(","))})
    base = dense_flow(img_r, img_k, cfg)
    valid = base.valid

    def row(label: str, flow: np.ndarray, kept: np.ndarray | None = None) -> None:
        err = (flow - true) @ e
        sel = (valid if kept is None else kept) & on
        share = "" if kept is None else f" {100 * sel.sum() / on.sum():.1f} |"
        print(
            f"| {label} | {np.sqrt(np.mean(err[sel] ** 2)):.3f} | {np.median(np.abs(err[sel])):.3f} | "
            f"{np.sqrt(np.mean(err[sel & inner] ** 2)):.3f} |{share}",
            flush=True,
        )

    if args.prefilter is not None:
        print(
            f"## {name}, {args.size} px, noise {args.noise}: flow {ds.names[ref]} → {ds.names[k]} on the grain; "
            f"estimated noise {stretched_noise_grey(img_r):.2f} grey levels after the stretch; α "
            f"{cfg.variational_refinement_alpha:g}"
        )
        print("| prefilter | RMS along e px | median \\|err\\| px | interior RMS px | grain kept % |")
        print("|---|---:|---:|---:|---:|")
        row("none (dense stage flow)", base.flow, base.valid)
        limits = stretch_limits(np.concatenate([img_r, img_k], axis=1))
        for variant in args.prefilter:
            kind, *par = variant.split(":")
            vals = [float(v) for v in par]
            if kind == "nlm":
                fr, fk = (nlm_denoise(im, vals[0], limits, *[int(v) for v in vals[1:]]) for im in (img_r, img_k))
            elif kind == "bilateral":
                sig = noise_sigma(img_r)
                fr, fk = (cv2.bilateralFilter(im, -1, vals[0] * sig, vals[1]) for im in (img_r, img_k))
            elif kind == "gauss":
                fr, fk = (cv2.GaussianBlur(im, (0, 0), vals[0]) for im in (img_r, img_k))
            elif kind == "up":  # the flow on images upsampled by s, sampled back at the pixel centres
                s = vals[0]
                size = (round(w * s), round(h * s))
                fr, fk = (cv2.resize(im, size, interpolation=cv2.INTER_CUBIC) for im in (img_r, img_k))
                big = dense_flow(fr, fk, cfg)
                cx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) * np.float32(s) - 0.5
                cy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) * np.float32(s) - 0.5
                cx, cy = np.broadcast_to(cx, (h, w)).copy(), np.broadcast_to(cy, (h, w)).copy()
                flow = cv2.remap(big.flow, cx, cy, cv2.INTER_LINEAR) / np.float32(s)
                kept = cv2.remap(big.valid.view(np.uint8), cx, cy, cv2.INTER_NEAREST) > 0
                row(variant, flow, kept)
                continue
            else:
                raise SystemExit(f"unknown prefilter {kind}: use nlm, bilateral, gauss or up")
            res = dense_flow(fr, fk, cfg)
            row(variant, res.flow, res.valid)
        return

    if args.dis is not None:
        print(
            f"## {name}, {args.size} px, noise {args.noise}: flow {ds.names[ref]} → {ds.names[k]} on the grain; "
            f"estimated noise {stretched_noise_grey(img_r):.2f} grey levels after the stretch"
        )
        print("| flow settings | RMS along e px | median \\|err\\| px | interior RMS px | grain kept % |")
        print("|---|---:|---:|---:|---:|")
        row("dense stage flow (default)", base.flow, base.valid)
        for variant in args.dis:
            changes = {key: yaml.safe_load(v) for key, v in (kv.split("=", 1) for kv in variant.split(","))}
            res = dense_flow(img_r, img_k, replace(cfg, **changes))
            row(variant, res.flow, res.valid)
        return

    print(f"## {name}, {args.size} px, noise {args.noise}: flow {ds.names[ref]} → {ds.names[k]} on the grain")
    print("| flow | RMS along e px | median \\|err\\| px | interior RMS px |")
    print("|---|---:|---:|---:|")
    row("dense stage flow (DIS, 2 passes)", base.flow)
    for sigma in (3.0, 5.0):
        for start_name, start in (("flow", base.flow), ("true match", true)):
            u = start
            for it in range(1, 4):
                u = epipolar_lk(img_r, img_k, u, valid, e, sigma)
                if it in (1, 3):
                    row(f"epipolar LK σ {sigma:g}, from the {start_name}, {it} step(s)", u)
    for blur in (0.7, 1.0, 1.5):
        pre = dense_flow(cv2.GaussianBlur(img_r, (0, 0), blur), cv2.GaussianBlur(img_k, (0, 0), blur), cfg)
        row(f"pre-blur σ {blur:g} px, then the flow", pre.flow)
    along = base.flow @ e
    for sigma in (3.0, 5.0, 8.0):
        smooth = local_linear_smooth(along, valid, sigma, robust_passes=1)
        row(f"local-plane fit σ {sigma:g} of the along-line flow", base.flow + (smooth - along)[..., None] * e)
    back = dense_flow(img_k, img_r, cfg)
    xx, yy = xx.astype(np.float32), yy.astype(np.float32)
    b_at = cv2.remap(back.flow, xx + base.flow[..., 0], yy + base.flow[..., 1], cv2.INTER_LINEAR, borderValue=np.nan)
    inverted = np.where(np.isfinite(b_at), -b_at, base.flow).astype(np.float32)
    err_f, err_b = ((base.flow - true) @ e)[valid & on], ((inverted - true) @ e)[valid & on]
    row(
        f"backward flow inverted at the forward match (error correlation {np.corrcoef(err_f, err_b)[0, 1]:.2f})",
        inverted,
    )
    row("mean of the forward and the inverted backward flow", 0.5 * (base.flow + inverted))


if __name__ == "__main__":
    main()
