"""Affine cameras and structure from tracks alone: Tomasi–Kanade / Poelman–Kanade factorization.

Steps (for F ≥ 3 views and the P tracks seen in every view):

1. Centre the measurement matrix: ``t_f`` = row means of ``W`` (2F × P), ``W̃ = W − t 1ᵀ``.
2. Rank-3 SVD ``W̃ ≈ U₃ Σ₃ V₃ᵀ = Ĉ Ŝ`` with ``Ĉ = U₃ Σ₃^½`` (2F × 3) and ``Ŝ = Σ₃^½ V₃ᵀ`` (3 × P).
   ``Ĉ`` and ``Ŝ`` are an affine reconstruction: ``(Ĉ A, A⁻¹ Ŝ)`` fits equally for any invertible A.
3. Metric upgrade: find ``Q`` with ``M_f = Ĉ_f Q`` a scaled rotation. With ``L = Q Qᵀ`` (symmetric,
   six unknowns) and the rows ``î_f, ĵ_f`` of ``Ĉ_f``:

   * scaled orthographic (Poelman & Kanade 1997): ``î_fᵀ L ĵ_f = 0`` and ``î_fᵀ L î_f − ĵ_fᵀ L ĵ_f = 0``
     per view, with the scale fixed by ``î_1ᵀ L î_1 = 1`` (imposed as an equality constraint of the
     linear least-squares problem, so the first view has ``k_1 = 1``: world unit = px of view 1);
   * orthographic (Tomasi & Kanade 1992): ``î_fᵀ L î_f = 1``, ``ĵ_fᵀ L ĵ_f = 1``, ``î_fᵀ L ĵ_f = 0``.

   ``L`` is projected onto the positive semidefinite cone (eigenvalue clipping) and ``Q = V Λ^½``.
4. Every ``M_f`` is replaced by the nearest ``k_f · [r1; r2]`` with orthonormal rows (polar
   decomposition: ``M_f = U S Vᵀ`` → ``[r1; r2] = U Vᵀ``, ``k_f = mean(S)``; ``k_f = 1`` for orthographic),
   ``r3 = r1 × r2``, skew 0. A global rotation makes ``R_1 = R₀ = diag(1, −1, −1)`` (world = the frame of
   view 1 in the topograph convention: X along image x, Y along image *up*, Z toward the detector;
   :mod:`topograph.geometry.affine`), and the points are re-triangulated with the final cameras.

Depth reversal: ``(R_f, X)`` and ``(D R_f D, D X)`` with ``D = diag(1, 1, −1)`` explain the images
equally well (``[[1,0,0],[s,1,0]] D = [[1,0,0],[s,1,0]]``); the second is the relief seen "inside out",
with every tilt angle negated. Both are proper (no mirror image of the specimen as a whole: the relief
*and* the tilts are reversed); flipping Z alone would give a mirror image. :func:`resolve_mirror` and
:mod:`topograph.sem.cameras` choose the branch (metadata tilt sense, protrusion).

Precision: with small tilt differences the tilt angle is seen only through the second-order
foreshortening ``cos θ`` (first order, depth and ``sin θ`` trade off), so it is far less precise than the
reprojection error suggests. For 600 points spanning 800 px at 0.5 px noise the Cramér–Rao bound of the
last view's tilt is about 0.19° for tilts 0/5/10° and 0.08° for −10…10° (scaled orthographic); the linear
factorization comes within ~20 % of it, and bundle adjustment reaches it.

Accuracy on real images: the same second-order dependence makes the tilt react strongly to deformations
of the images beyond the affine model (scan drift, scan non-linearity): a difference of 0.1 % between the
x and y magnification of one view changes every tilt of a 0/5/10° series by about 6 %. On the quartz series
of 3D-SEM the local y magnification of views 2 and 3 varies by 0.2–0.3 % across the image, and tracks from
different image halves give tilts 3.9/7.7° and 5.3/10.4°, whereas track noise accounts for only
±0.04/0.08°. :func:`tilt_uncertainty` measures both (bootstrap and image-half split); which tracks are
used then decides the answer within that spread: the same factorization gives 4.99/9.82° from all 1802
complete tracks and 4.74/9.36° from the 175 tracks of 3D-SEM's matching chain (3D-SEM reports 4.73/9.34°
from 181), which lie mostly in the upper half. The orthographic model is much worse on such data: it cannot
absorb the 0.2–0.3 % per-view magnification change and gives 6.3/12.4° there.

References:
    C. Tomasi, T. Kanade, "Shape and motion from image streams under orthography: a factorization
    method", IJCV 9(2), 1992. C. J. Poelman, T. Kanade, "A paraperspective factorization method for
    shape and motion recovery", IEEE TPAMI 19(3), 1997 (§ scaled orthography).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from topograph.errors import TopographError
from topograph.geometry.affine import R0
from topograph.geometry.triangulation import per_view_rms_px, triangulate
from topograph.types import AffineCamera, Tracks

logger = logging.getLogger("topograph")

FactorizationModel = Literal["orthographic", "scaled_orthographic"]
_MODELS = ("orthographic", "scaled_orthographic")
_MIRROR_NOTE = "mirror branch: "
MIRROR = np.diag([1.0, 1.0, -1.0])
"""``D = diag(1, 1, −1)``: the depth reversal of affine reconstructions."""


@dataclass(frozen=True)
class FactorizationResult:
    """Affine cameras and points recovered from tracks alone.

    Attributes:
        cameras: one :class:`AffineCamera` per view; ``R_1 = R₀`` (world = stage frame of view 1), skew 0.
        points: (P, 3) points of the complete tracks, world units = px of view 1.
        track_indices: (P,) indices of those tracks in the input :class:`Tracks`.
        relative_tilts_deg: (F,) signed rotation angle of every view relative to view 1, degrees, about
            :attr:`tilt_axis_deg` (right-hand rule about the axis direction in (−90°, 90°]).
        scales: (F,) camera scales ``k_f`` (``k_1 = 1``).
        tilt_axis_deg: in-image direction of the common rotation axis, degrees counter-clockwise from
            the image x axis as displayed, in (−90, 90].
        rms_px: (F,) per-view reprojection RMS of the complete tracks, px.
        model: "orthographic" or "scaled_orthographic".
        notes: human-readable statements (fit quality, mirror branch and why).
    """

    cameras: tuple[AffineCamera, ...]
    points: np.ndarray
    track_indices: np.ndarray
    relative_tilts_deg: np.ndarray
    scales: np.ndarray
    tilt_axis_deg: float
    rms_px: np.ndarray
    model: str
    notes: tuple[str, ...] = ()


def _sym_coeffs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Coefficients c with ``aᵀ L b = c · l`` for ``l = (L00, L01, L02, L11, L12, L22)``; a, b (..., 3)."""
    return np.stack(
        [
            a[..., 0] * b[..., 0],
            a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0],
            a[..., 0] * b[..., 2] + a[..., 2] * b[..., 0],
            a[..., 1] * b[..., 1],
            a[..., 1] * b[..., 2] + a[..., 2] * b[..., 1],
            a[..., 2] * b[..., 2],
        ],
        axis=-1,
    )


def _unpack_sym(l6: np.ndarray) -> np.ndarray:
    a, b, c, d, e, f = l6
    return np.array([[a, b, c], [b, d, e], [c, e, f]])


def metric_upgrade_gram(c_hat: np.ndarray, model: FactorizationModel) -> tuple[np.ndarray, list[str]]:
    """Solve the metric constraints for ``L = Q Qᵀ`` by linear least squares.

    Args:
        c_hat: (2F, 3) affine motion matrix; rows ``2f`` and ``2f+1`` are ``î_f`` and ``ĵ_f``.
        model: "scaled_orthographic" (Poelman–Kanade) or "orthographic" (Tomasi–Kanade).

    Returns:
        ``(L, notes)``: the symmetric 3×3 Gram matrix (not yet made PSD) and diagnostic notes.
    """
    i_rows, j_rows = c_hat[0::2], c_hat[1::2]
    notes: list[str] = []
    if model == "scaled_orthographic":
        a = np.vstack([_sym_coeffs(i_rows, j_rows), _sym_coeffs(i_rows, i_rows) - _sym_coeffs(j_rows, j_rows)])
        g = _sym_coeffs(i_rows[0], i_rows[0])
        # equality-constrained least squares  min ‖A l‖²  s.t.  gᵀ l = 1  (KKT system)
        kkt = np.zeros((7, 7))
        kkt[:6, :6] = a.T @ a
        kkt[:6, 6] = g
        kkt[6, :6] = g
        rhs = np.zeros(7)
        rhs[6] = 1.0
        l6 = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:6]
        sv = np.linalg.svd(a, compute_uv=False)
        if sv.size >= 6 and sv[-2] < 1e-8 * sv[0]:
            notes.append("metric upgrade is ill-conditioned (the views may share too few distinct directions)")
    else:
        a = np.vstack([_sym_coeffs(i_rows, i_rows), _sym_coeffs(j_rows, j_rows), _sym_coeffs(i_rows, j_rows)])
        rhs = np.concatenate([np.ones(len(i_rows)), np.ones(len(i_rows)), np.zeros(len(i_rows))])
        l6 = np.linalg.lstsq(a, rhs, rcond=None)[0]
    return _unpack_sym(l6), notes


def nearest_psd_factor(gram: np.ndarray) -> tuple[np.ndarray, bool]:
    """``Q = V Λ₊^½`` for the eigendecomposition ``L = V Λ Vᵀ`` with eigenvalues clipped at a small floor.

    Returns:
        ``(Q, clipped)``: the 3×3 factor and whether any eigenvalue had to be clipped.

    Raises:
        TopographError: when L has no positive eigenvalue (no metric solution).
    """
    w, v = np.linalg.eigh(0.5 * (gram + gram.T))
    if w[-1] <= 0:
        raise TopographError(
            "the metric upgrade of the factorization failed (no positive-definite solution)",
            "check the matches (outliers) or provide tilt angles in the metadata",
        )
    floor = 1e-9 * w[-1]
    clipped = bool(w[0] < floor)
    return v * np.sqrt(np.maximum(w, floor)), clipped


def orthonormalize_camera(m: np.ndarray, scaled: bool) -> tuple[float, np.ndarray]:
    """Nearest ``k [r1; r2]`` (orthonormal rows) to a 2×3 matrix by polar decomposition.

    ``M = U S Vᵀ`` → ``[r1; r2] = U Vᵀ`` and ``k = (s1 + s2) / 2`` (``k = 1`` when not ``scaled``);
    returns ``(k, R)`` with ``r3 = r1 × r2``.
    """
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    r12 = u @ vt
    k = float(s.mean()) if scaled else 1.0
    return k, np.vstack([r12, np.cross(r12[0], r12[1])])


def wrap_axis_deg(angle_deg: float) -> float:
    """Map a line direction in degrees to (−90, 90]."""
    a = (float(angle_deg) + 90.0) % 180.0 - 90.0
    return 90.0 if a == -90.0 else a


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """Axis-angle vector ``ω`` (3,) of a rotation matrix: ``θ = atan2(|v|, (tr R − 1) / 2)`` with
    ``v = vee(R − Rᵀ) / 2 = sin θ · axis`` (the logarithm map; scipy.spatial's Rotation would cost ~0.2 s of
    import time in a sparse run that needs nothing else from it). Near θ = π the axis is the dominant
    column of ``(R + I) / 2``."""
    r = np.asarray(rotation, dtype=np.float64)
    v = 0.5 * np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    sin_t = float(np.linalg.norm(v))
    theta = float(np.arctan2(sin_t, 0.5 * (np.trace(r) - 1.0)))
    if theta < 1e-12:
        return np.zeros(3)
    if np.pi - theta < 1e-6:
        b = 0.5 * (r + np.eye(3))
        col = b[:, int(np.argmax(np.linalg.norm(b, axis=0)))]
        return theta * col / np.linalg.norm(col)
    return theta * v / sin_t


def relative_tilts(cameras: Sequence[AffineCamera]) -> tuple[np.ndarray, float, float]:
    """Signed rotation of every view relative to view 1 about the common (tilt) axis.

    The rotation vectors ``ω_f`` of ``R_f R_1ᵀ`` (in the camera frame of view 1: x right, y down) are
    sign-aligned and summed; the axis is their sum projected on the image plane of view 1, its direction
    ``a = atan2(−w_y, w_x)`` counter-clockwise as displayed, taken in (−90°, 90°]. The signed tilt of view f
    is ``|ω_f| · sign(ω_f · u_cam)`` with ``u_cam = (cos a, −sin a, 0)`` (right-hand rule about the axis;
    for ``R_f = R₀ Rot(u, θ_f)`` this returns ``θ_f − θ_1``).

    Args:
        cameras: F cameras (F ≥ 2).

    Returns:
        ``(tilts_deg (F,), tilt_axis_deg, max_axis_deviation_deg)``; the last is the largest angle between
        a view's rotation axis and the common axis (0 for a pure single-axis tilt series).
    """
    r1 = cameras[0].rotation
    # R_f R_1ᵀ maps camera-1 coordinates to camera-f coordinates: its rotation vector is in the camera
    # frame of view 1, whose x, y are the image axes of view 1
    rotvecs = np.stack([rotation_vector(c.rotation @ r1.T) for c in cameras])
    norms = np.linalg.norm(rotvecs, axis=1)
    ref = rotvecs[int(np.argmax(norms))]
    aligned = rotvecs * np.where(rotvecs @ ref >= 0, 1.0, -1.0)[:, None]
    w = aligned.sum(axis=0)
    if np.hypot(w[0], w[1]) < 1e-12:
        return np.zeros(len(cameras)), 0.0, 0.0
    axis_deg = wrap_axis_deg(np.rad2deg(np.arctan2(-w[1], w[0])))
    a = np.deg2rad(axis_deg)
    u = np.array([np.cos(a), -np.sin(a), 0.0])
    tilts = np.rad2deg(norms * np.sign(rotvecs @ u))
    big = norms > np.deg2rad(0.5)
    dev = 0.0
    if big.any():
        cosang = np.abs(rotvecs[big] @ u) / norms[big]
        dev = float(np.rad2deg(np.arccos(np.clip(cosang, -1.0, 1.0))).max())
    return tilts, axis_deg, dev


def mirror(cameras: Sequence[AffineCamera], points: np.ndarray) -> tuple[tuple[AffineCamera, ...], np.ndarray]:
    """The depth-reversed twin of a reconstruction: ``R_f → D R_f D``, ``X → D X``, ``D = diag(1, 1, −1)``.

    Every projection is unchanged (``k C D R D D X = k C R X`` because ``C D = C``), every tilt about an
    in-plane axis changes sign, and the relief is inverted.

    Args:
        cameras: F affine cameras.
        points: (P, 3) world points.

    Returns:
        ``(cameras, points)`` of the mirrored branch.
    """
    cams = tuple(replace(c, rotation=MIRROR @ c.rotation @ MIRROR) for c in cameras)
    return cams, np.asarray(points, dtype=float) * np.array([1.0, 1.0, -1.0])


def _metadata_tilts_about_estimated_axis(
    known: Sequence[float | None], known_axis_deg: float | None, estimated_axis_deg: float
) -> np.ndarray:
    """Metadata tilts expressed about the estimated axis (pointing toward +x): negated when the metadata
    axis points the other way (``cos(a_meta − a_est) < 0``)."""
    vals = np.array([np.nan if k is None else float(k) for k in known])
    if known_axis_deg is not None and np.cos(np.deg2rad(known_axis_deg - estimated_axis_deg)) < 0:
        vals = -vals
    return vals


def resolve_mirror(
    result: FactorizationResult,
    known_tilts_deg: Sequence[float | None] | None = None,
    flip: bool = False,
    *,
    known_tilt_axis_deg: float | None = None,
) -> FactorizationResult:
    """Choose between the two depth-reversed branches of an affine reconstruction.

    * With metadata tilts (at least two views with different known tilts): keep the branch whose signed
      relative tilts agree with the metadata, i.e. the sign of ``Σ_{f<g} (τ_f − τ_g)(θ_f − θ_g)`` over
      the known views (τ estimated, θ metadata) must be positive. Metadata tilts are taken about the tilt
      axis pointing toward +x in the image; when ``known_tilt_axis_deg`` is given and points away from
      the estimated axis (``cos(a_meta − a_est) < 0``, e.g. 180° vs 0°, or 90° vs an estimate of −89.9°),
      the metadata tilts are negated first.
    * Without usable metadata, the convention: *views are ordered by increasing tilt, so the last view's
      tilt relative to the first is positive about the tilt axis taken pointing toward +x in the image*.
    * ``flip=True`` (``--flip-relief``) inverts whichever branch was chosen.

    Args:
        result: a factorization result (either branch).
        known_tilts_deg: per-view metadata tilts in degrees (None where unknown), or None.
        flip: invert the choice.
        known_tilt_axis_deg: in-image direction of the metadata tilt axis, degrees (optional).

    Returns:
        The result on the chosen branch, with a ``"mirror branch: …"`` note saying which and why.

    Raises:
        TopographError: when ``known_tilts_deg`` does not have one entry per view.
    """
    est = np.asarray(result.relative_tilts_deg, dtype=float)
    n = est.size
    reason = ""
    keep: bool | None = None
    if known_tilts_deg is not None:
        if len(known_tilts_deg) != n:
            raise TopographError(
                f"got {len(known_tilts_deg)} metadata tilt angles for {n} views",
                "give one tilt per image (or none) in the sidecar file / --tilts",
            )
        meta = _metadata_tilts_about_estimated_axis(known_tilts_deg, known_tilt_axis_deg, result.tilt_axis_deg)
        ok = np.nonzero(np.isfinite(meta))[0]
        if ok.size >= 2:
            d_est = est[ok][:, None] - est[ok][None, :]
            d_meta = meta[ok][:, None] - meta[ok][None, :]
            score = float(np.sum(np.triu(d_est * d_meta, 1)))
            if abs(score) > 1e-9:
                keep = score > 0
                reason = "relative tilts agree in sign with the metadata tilts"
    if keep is None:
        ref = est[-1] if abs(est[-1]) > 1e-6 else est[int(np.argmax(np.abs(est)))]
        keep = bool(ref >= 0)
        reason = (
            "no usable metadata tilts; convention: views ordered by increasing tilt, the last view's tilt "
            "relative to the first is positive about the tilt axis pointing toward +x"
        )
    if flip:
        keep = not keep
        reason += "; inverted by flip (--flip-relief)"
    cams, pts = (result.cameras, result.points) if keep else mirror(result.cameras, result.points)
    tilts = est if keep else -est
    notes = tuple(s for s in result.notes if not s.startswith(_MIRROR_NOTE))
    note = (
        f"{_MIRROR_NOTE}{'kept' if keep else 'mirrored'} ({reason}); relative tilts {np.round(tilts, 3).tolist()} deg"
    )
    logger.debug(note)  # the caller reports the final branch with its notes (this runs once per candidate)
    return replace(result, cameras=cams, points=pts, relative_tilts_deg=tilts, notes=(*notes, note))


@dataclass(frozen=True)
class _Motion:
    """Cameras of the metric upgrade (steps 1–4) before triangulation."""

    cameras: tuple[AffineCamera, ...]
    scales: list[float]
    world_rotation: np.ndarray
    q: np.ndarray
    s_hat: np.ndarray | None
    notes: tuple[str, ...]


def _factor_motion(complete: Tracks, model: FactorizationModel, structure: bool = True) -> _Motion:
    """Steps 1–4 of the module docstring on complete tracks (F, P, 2): centred SVD, metric upgrade, nearest
    scaled rotations, world frame = camera frame of view 1.

    With ``structure=False`` only the cameras are wanted: the left singular vectors and values come from
    the eigendecomposition of the small (2F × 2F) matrix ``W̃ W̃ᵀ = U Σ² Uᵀ`` (much faster for many tracks)
    and ``s_hat`` is None.

    Raises:
        TopographError: when the centred measurement matrix has rank < 3 (no depth seen).
    """
    n_f = complete.n_views
    w = complete.measurement_matrix()
    t = w.mean(axis=1)
    wc = w - t[:, None]
    if structure:
        u, s, vt = np.linalg.svd(wc, full_matrices=False)
    else:
        lam, vec = np.linalg.eigh(wc @ wc.T)
        s, u, vt = np.sqrt(np.clip(lam[::-1], 0.0, None)), vec[:, ::-1], None
    if s[2] < 1e-9 * s[0]:
        raise TopographError(
            "the views see no depth (the measurement matrix has rank < 3)",
            "use images with a larger tilt difference of a specimen with relief",
        )
    notes: list[str] = []
    if s.size > 3:
        notes.append(f"rank-3 residual singular-value ratio s4/s3 = {s[3] / s[2]:.3g}")
    c_hat = u[:, :3] * np.sqrt(s[:3])
    s_hat = None if vt is None else np.sqrt(s[:3])[:, None] * vt[:3]
    gram, upgrade_notes = metric_upgrade_gram(c_hat, model)
    notes.extend(upgrade_notes)
    q, clipped = nearest_psd_factor(gram)
    if clipped:
        notes.append("metric upgrade: L was not positive definite and was clipped (weak or degenerate tilts)")
    scaled = model == "scaled_orthographic"
    ks, rots = [], []
    for f in range(n_f):
        k, r = orthonormalize_camera(c_hat[2 * f : 2 * f + 2] @ q, scaled)
        ks.append(k)
        rots.append(r)
    g = rots[0]
    # world X' = R₀ g X: then R_f' = r_f gᵀ R₀ and R_1' = R₀ (view 1 is the untilted stage)
    cameras = tuple(
        AffineCamera(rotation=r @ g.T @ R0, scale=k, skew=0.0, translation=t[2 * f : 2 * f + 2])
        for f, (k, r) in enumerate(zip(ks, rots, strict=True))
    )
    return _Motion(cameras, ks, R0 @ g, q, s_hat, tuple(notes))


def factorize(
    tracks: Tracks,
    model: FactorizationModel = "scaled_orthographic",
    *,
    known_tilts_deg: Sequence[float | None] | None = None,
    flip: bool = False,
    known_tilt_axis_deg: float | None = None,
) -> FactorizationResult:
    """Recover affine cameras and structure from the complete tracks (module docstring, steps 1–4).

    Args:
        tracks: (F, P, 2) observations in px; F ≥ 3 and at least 4 tracks seen in every view.
        model: "scaled_orthographic" (per-view scale, Poelman–Kanade) or "orthographic" (Tomasi–Kanade).
        known_tilts_deg: optional metadata tilts used only to pick the mirror branch
            (:func:`resolve_mirror`).
        flip: invert the mirror-branch choice.
        known_tilt_axis_deg: optional metadata tilt-axis direction (sign of the metadata tilts).

    Returns:
        A :class:`FactorizationResult` on the branch chosen by :func:`resolve_mirror`.

    Raises:
        TopographError: fewer than 3 views, fewer than 4 complete tracks, an unknown model, or views
            that see no depth (rank-deficient measurement matrix).
    """
    if model not in _MODELS:
        raise TopographError(f"unknown factorization model {model!r}", f"use one of {', '.join(_MODELS)}")
    n_f = tracks.n_views
    if n_f < 3:
        raise TopographError(
            f"factorization needs at least 3 views, got {n_f}",
            "add a third tilted image, or give the tilt angles (metadata cameras work with 2 views)",
        )
    idx = np.nonzero(tracks.visible.all(axis=0))[0]
    if idx.size < 4:
        raise TopographError(
            f"factorization needs at least 4 tracks seen in every view, got {idx.size}",
            "use a denser matcher or images with more overlap",
        )
    complete = Tracks(tracks.xy[:, idx])
    motion = _factor_motion(complete, model)
    notes = [f"{model} factorization of {n_f} views from {idx.size} complete tracks", *motion.notes]
    cameras, ks, g = motion.cameras, motion.scales, motion.world_rotation
    points = triangulate(cameras, complete)
    if not np.isfinite(points).all():  # fall back to the affine structure when the cameras are degenerate
        points = (g @ np.linalg.solve(motion.q, motion.s_hat)).T
    rms = per_view_rms_px(cameras, points, complete)
    tilts, axis_deg, dev = relative_tilts(cameras)
    if dev > 5.0:
        notes.append(f"views are not a single-axis tilt series (rotation axes deviate up to {dev:.1f} deg)")
    notes.append(f"reprojection RMS per view {np.round(rms, 3).tolist()} px; tilt axis {axis_deg:.2f} deg")
    result = FactorizationResult(
        cameras=cameras,
        points=points,
        track_indices=idx,
        relative_tilts_deg=tilts,
        scales=np.array(ks),
        tilt_axis_deg=axis_deg,
        rms_px=rms,
        model=model,
        notes=tuple(notes),
    )
    return resolve_mirror(result, known_tilts_deg, flip, known_tilt_axis_deg=known_tilt_axis_deg)


@dataclass(frozen=True)
class TiltUncertainty:
    """How well the tracks determine the relative tilt angles of a factorization.

    Attributes:
        tilts_deg: (F,) signed relative tilts of all complete tracks (as :func:`factorize`, same branch).
        statistical_deg: (F,) bootstrap standard deviation of ``tilts_deg`` (track resampling), degrees.
        region_labels: names of the four image regions (halves of view 1 along and across the tilt axis).
        region_tilts_deg: (4, F) tilts from the tracks of each region alone, on the branch of ``tilts_deg``.
        region_z: (2, F) disagreement of the two halves of each split in units of its bootstrap standard
            deviation, ``|τ_a − τ_b| / sd(τ_a − τ_b)``.
        region_spread_deg: (F,) half the larger disagreement of the two splits, ``max |τ_a − τ_b| / 2``:
            how far the estimate moves with the part of the image it is computed from.
        consistent: every ``region_z`` is below the threshold, i.e. the halves agree within their noise.
        n_tracks: number of complete tracks used.
    """

    tilts_deg: np.ndarray
    statistical_deg: np.ndarray
    region_labels: tuple[str, ...]
    region_tilts_deg: np.ndarray
    region_z: np.ndarray
    region_spread_deg: np.ndarray
    consistent: bool
    n_tracks: int

    @property
    def uncertainty_deg(self) -> np.ndarray:
        """(F,) combined uncertainty: the statistical one, or the region spread when the halves disagree."""
        if self.consistent:
            return self.statistical_deg
        return np.hypot(self.statistical_deg, self.region_spread_deg)

    def describe(self) -> str:
        """One line for the log: tilts ± uncertainty and what limits it."""
        tilts = (np.round(self.tilts_deg, 3) + 0.0).tolist()
        stat = np.round(self.statistical_deg, 3).tolist()
        if self.consistent:
            return (
                f"relative tilts by factorization (before bundle adjustment) {tilts} deg ± {stat} "
                f"(bootstrap over {self.n_tracks} tracks)"
            )
        spread = np.round(self.region_spread_deg, 2).tolist()
        return (
            f"relative tilts by factorization (before bundle adjustment) {tilts} deg: ± {stat} from the track "
            "noise, but image halves disagree by up to "
            f"± {spread} deg ({float(self.region_z.max()):.0f} sd): the views deform beyond the affine model "
            "(e.g. scan drift), which limits the tilt accuracy"
        )


def _signed_tilts(xy: np.ndarray, model: FactorizationModel, reference: np.ndarray | None) -> np.ndarray:
    """Relative tilts of complete tracks (F, P, 2), negated when that puts them on the reference's branch."""
    tilts = relative_tilts(_factor_motion(Tracks(xy), model, structure=False).cameras)[0]
    if reference is not None and float(tilts @ reference) < 0:
        tilts = -tilts
    return tilts


def tilt_uncertainty(
    tracks: Tracks,
    model: FactorizationModel = "scaled_orthographic",
    *,
    reference_tilts_deg: Sequence[float] | None = None,
    n_bootstrap: int = 100,
    z_threshold: float = 4.0,
    seed: int = 0,
) -> TiltUncertainty:
    """Statistical and systematic uncertainty of the factorization's relative tilt angles.

    With small tilts the tilt angle is seen only through the second-order foreshortening ``cos θ`` (module
    docstring), so it reacts strongly to any deformation of the images beyond the affine model: a
    difference of 0.1 % between the x and y magnification of one view changes every tilt of a 0/5/10°
    series by about 6 %. Two numbers therefore describe the estimate:

    * statistical: the standard deviation over ``n_bootstrap`` resamplings of the complete tracks;
    * systematic: the tracks are split into halves of view 1 along the tilt axis (``s = x·u`` at its
      median, ``u`` the axis direction) and across it (``x·u⊥``), each half is factorized alone, and the
      halves are compared. ``region_z = |τ_a − τ_b| / sd(τ_a − τ_b)`` with the standard deviation from the
      same bootstrap resamples. An exact affine series gives ``region_z`` of order 1; a larger value means
      the images deform between views and the tilt depends on the image region it is taken from by
      ``region_spread_deg``.

    Args:
        tracks: (F, P, 2) observations in px (F ≥ 3); only the tracks seen in every view are used.
        model: factorization model (as :func:`factorize`).
        reference_tilts_deg: tilts whose mirror branch the results follow (e.g. the resolved ones of
            :func:`factorize`); default: the branch on which the largest relative tilt is positive.
        n_bootstrap: number of bootstrap resamples (≥ 20).
        z_threshold: largest ``region_z`` still called consistent.
        seed: seed of the resampling.

    Returns:
        A :class:`TiltUncertainty`.

    Raises:
        TopographError: fewer than 3 views, fewer than 40 complete tracks, too few resamples or an unknown model.
    """
    if model not in _MODELS:
        raise TopographError(f"unknown factorization model {model!r}", f"use one of {', '.join(_MODELS)}")
    if n_bootstrap < 20:
        raise TopographError(f"n_bootstrap = {n_bootstrap} is too few for a standard deviation", "use at least 20")
    if tracks.n_views < 3:
        raise TopographError(
            f"tilt uncertainty needs at least 3 views, got {tracks.n_views}", "add a third tilted image"
        )
    idx = np.nonzero(tracks.visible.all(axis=0))[0]
    if idx.size < 40:
        raise TopographError(
            f"tilt uncertainty needs at least 40 tracks seen in every view, got {idx.size}",
            "use a denser matcher or images with more overlap",
        )
    xy = tracks.xy[:, idx]
    ref = None if reference_tilts_deg is None else np.asarray(reference_tilts_deg, dtype=float)
    cams = _factor_motion(Tracks(xy), model, structure=False).cameras
    tilts, axis_deg, _ = relative_tilts(cams)
    if (ref is not None and float(tilts @ ref) < 0) or (ref is None and tilts[np.argmax(np.abs(tilts))] < 0):
        tilts = -tilts
    a = np.deg2rad(axis_deg)
    along = xy[0] @ np.array([np.cos(a), np.sin(a)])
    across = xy[0] @ np.array([-np.sin(a), np.cos(a)])
    halves = [along < np.median(along), along >= np.median(along), across < np.median(across)]
    halves.append(~halves[2])
    labels = ("along-axis half 1", "along-axis half 2", "across-axis half 1", "across-axis half 2")

    def regions(cols: np.ndarray) -> np.ndarray:
        return np.stack([_signed_tilts(xy[:, cols[h[cols]]], model, tilts) for h in halves])

    region = regions(np.arange(xy.shape[1]))
    rng = np.random.default_rng(seed)
    boot_full, boot_diff = [], []
    for _ in range(n_bootstrap):
        cols = rng.integers(0, xy.shape[1], xy.shape[1])
        boot_full.append(_signed_tilts(xy[:, cols], model, tilts))
        r = regions(cols)
        boot_diff.append(r[[0, 2]] - r[[1, 3]])
    statistical = np.std(boot_full, axis=0)
    diff = region[[0, 2]] - region[[1, 3]]
    sd = np.std(boot_diff, axis=0)
    z = np.abs(diff) / np.maximum(sd, 1e-12)
    z[:, 0] = 0.0  # view 1 is the reference: its tilt is 0 by construction
    spread = np.abs(diff).max(axis=0) / 2.0
    result = TiltUncertainty(
        tilts_deg=tilts,
        statistical_deg=statistical,
        region_labels=labels,
        region_tilts_deg=region,
        region_z=z,
        region_spread_deg=spread,
        consistent=bool(z.max() < z_threshold),
        n_tracks=int(idx.size),
    )
    logger.info(result.describe())
    return result
