"""Cameras of an SEM tilt series: the images decide the geometry, the metadata gives magnitudes and scale.

Steps (docs/conventions.md for the frame and the sign conventions):

1. **What the images say** (:func:`image_geometry`): the tilt-axis line from the affine epipolar
   geometry or the factorization, and — with ≥ 3 views — the relative tilts, each with a bootstrap
   uncertainty (tilts: :func:`topograph.geometry.factorization.tilt_uncertainty`, which also measures how
   much they depend on the image region).
2. **What the metadata says** (:class:`MetadataGeometry`): stage tilts, the tilt-axis direction, stage
   rotations, where each came from and whether its sense is known.
3. **Comparison** (:func:`compare_geometry`): a disagreement beyond the uncertainty gives one warning line
   naming the field, both values and the likely cause (opposite angle sense, images rotated by 90°, an
   opposite tilt sense).
4. **Choice** (``--cameras``): ``metadata`` builds the cameras from the tags (axis from the images when the
   tags have none); ``images`` uses the factorization; ``auto`` (default) uses the image axis with the
   metadata tilts when the two agree, and the factorization cameras when the tilts disagree.
5. **Depth sign** (:func:`choose_branch`): the affine depth reversal leaves two branches, ``(R, X)`` and
   ``(M R M, M X)`` with ``M = diag(1, 1, −1)`` (the second negates every tilt *and* the relief; Z is
   never flipped alone, which would mirror the specimen). One rule for every camera source, with two
   witnesses — the metadata tilt sense (when the axis direction and the sense are known) and "a specimen
   on a substrate protrudes from it" — and ``--relief auto|metadata|protrude|recess``, ``--flip-relief``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from topograph.errors import TopographError
from topograph.geometry.affine import camera_from_stage, rotation_about_axis, tilt_axis_vector
from topograph.geometry.factorization import (
    FactorizationResult,
    _factor_motion,
    factorize,
    mirror,
    relative_tilts,
    tilt_uncertainty,
    wrap_axis_deg,
)
from topograph.geometry.triangulation import per_view_rms_px, triangulate
from topograph.sem.config import CameraConfig
from topograph.types import AffineCamera, ImageSet, Tracks

log = logging.getLogger("topograph")

AXIS_FLOOR_DEG = 1.0
"""Smallest tilt-axis disagreement called a contradiction (a user's "0°" for a stage that is 0.3° off is fine)."""
TILT_FLOOR_DEG = 0.3
"""Smallest relative-tilt disagreement called a contradiction."""
TILT_FLOOR_FRACTION = 0.05
"""… or this fraction of the metadata's tilt difference (scan deformation moves the image tilts by a few %)."""
META_AXIS_SD_DEG = 0.1
"""Precision credited to a tilt-axis direction given by the user (command line, sidecar): when it agrees with
the images and the images' own estimate is less precise (few complete tracks: a low-contrast series), the
given direction is used."""
N_SIGMA = 4.0
"""Disagreements beyond this many standard deviations of the image estimate are contradictions."""
PROTRUSION_MIN = 0.1
"""Normalised protrusion score below which the relief does not say which branch is up."""
PROTRUSION_CONFIDENT = 0.3
"""Protrusion score the relief needs to overrule a metadata tilt sense that agrees with the images' geometry
(a grain on a matched substrate scores 0.5–1; a sparse cloud with little substrate can score ±0.1–0.3)."""


@dataclass(frozen=True)
class ImageGeometry:
    """Tilt geometry measured from the images alone.

    Attributes:
        tilt_axis_deg: tilt-axis line in the image, degrees counter-clockwise from x, in (−90, 90].
        tilt_axis_sd_deg: its bootstrap standard deviation.
        relative_tilts_deg: (F,) relative tilts about the axis direction ``tilt_axis_deg`` on the branch of
            ``factorization`` (None with 2 views: two affine views do not fix the angle).
        tilts_sd_deg: (F,) their uncertainty (bootstrap, and the image-region spread when it is larger).
        factorization: the factorization result (None with 2 views).
        source: how the axis was measured.
    """

    tilt_axis_deg: float
    tilt_axis_sd_deg: float
    relative_tilts_deg: np.ndarray | None
    tilts_sd_deg: np.ndarray | None
    factorization: FactorizationResult | None
    source: str

    def summary(self) -> dict[str, Any]:
        return {
            "tilt_axis_deg": self.tilt_axis_deg,
            "tilt_axis_sd_deg": self.tilt_axis_sd_deg,
            "relative_tilts_deg": None if self.relative_tilts_deg is None else self.relative_tilts_deg.tolist(),
            "relative_tilts_sd_deg": None if self.tilts_sd_deg is None else self.tilts_sd_deg.tolist(),
            "source": self.source,
        }


@dataclass(frozen=True)
class MetadataGeometry:
    """Tilt geometry from the tags, sidecar or command line.

    Attributes:
        tilts_deg: (F,) absolute stage tilts, or None when any view lacks one.
        tilt_axis_deg: axis *direction* (counter-clockwise from image x), or None when not given.
        stage_rotations_deg: (F,) stage rotations relative to view 0.
        tilt_source: where the tilts came from ("cli", "sidecar", "fei", "zeiss", …).
        axis_source: where the axis came from.
    """

    tilts_deg: np.ndarray | None
    tilt_axis_deg: float | None
    stage_rotations_deg: np.ndarray
    tilt_source: str | None
    axis_source: str | None

    @property
    def sense_known(self) -> bool:
        """The tilt sense is known when the axis direction is given by the user (documented convention).

        Vendor tags give no axis direction (docs/conventions.md: vendor table), so their sense is unknown.
        """
        return self.tilts_deg is not None and self.tilt_axis_deg is not None and self.axis_source in ("cli", "sidecar")

    @property
    def relative_tilts_deg(self) -> np.ndarray | None:
        return None if self.tilts_deg is None else self.tilts_deg - self.tilts_deg[0]


@dataclass(frozen=True)
class BranchChoice:
    """Which depth-reversal branch was kept and why."""

    mirrored: bool
    """True when the (M R M, M X) twin of the candidate cameras was taken."""
    metadata_vote: bool | None
    """Branch the metadata tilt sense asks for (True = mirrored), None when unknown."""
    protrusion_vote: bool | None
    """Branch on which the specimen protrudes (True = mirrored), None when the relief does not say."""
    protrusion_score: float
    rule: str
    note: str
    warning: str | None = None
    confidence: str = "confirmed"
    """"confirmed" (both witnesses agree), "confident" (one clear witness), "forced" (--relief metadata /
    protrude / recess with its witness), "contested" (the witnesses disagree), "weak" (a single weak
    witness) or "undecided" (no witness: increasing tilt order). The last three are warned."""

    @property
    def trusted(self) -> bool:
        """Whether the relief's sign rests on a clear witness (not contested, weak or undecided)."""
        return self.confidence in ("confirmed", "confident", "forced")


@dataclass(frozen=True)
class CameraEstimate:
    """Cameras with where they came from and what was checked."""

    cameras: tuple[AffineCamera, ...]
    source: str
    """"metadata" (stage tilts; rotations trusted in bundle adjustment) or "factorization" (from the images)."""
    tilt_axis_deg: float
    notes: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    image_geometry: ImageGeometry | None = None
    branch: BranchChoice | None = None
    checks: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for summary.json."""
        out: dict[str, Any] = {"source": self.source, "tilt_axis_deg": self.tilt_axis_deg, **self.checks}
        if self.image_geometry is not None:
            out["from_images"] = self.image_geometry.summary()
        if self.branch is not None:
            out["depth_branch"] = {
                "rule": self.branch.rule,
                "mirrored_twin_taken": self.branch.mirrored,
                "metadata_says_mirrored": self.branch.metadata_vote,
                "protrusion_says_mirrored": self.branch.protrusion_vote,
                "protrusion_score": self.branch.protrusion_score,
                "confidence": self.branch.confidence,
                "trusted": self.branch.trusted,
                "note": self.branch.note,
            }
        out["warnings"] = list(self.warnings)
        return out


# ----------------------------------------------------------------------------------------------------
# what the images say


def _line_diff_deg(a: float, b: float) -> float:
    """Signed difference of two axis lines (period 180°), in (−90, 90]."""
    return wrap_axis_deg(a - b)


def _axis_bootstrap(xy: np.ndarray, model: str, n: int, seed: int) -> float:
    """Bootstrap standard deviation of the factorization's tilt-axis line over resampled complete tracks."""
    rng = np.random.default_rng(seed)
    ref = relative_tilts(_factor_motion(Tracks(xy), model, structure=False).cameras)[1]
    vals = []
    for _ in range(n):
        cols = rng.integers(0, xy.shape[1], xy.shape[1])
        try:
            a = relative_tilts(_factor_motion(Tracks(xy[:, cols]), model, structure=False).cameras)[1]
        except TopographError:
            continue
        vals.append(ref + _line_diff_deg(a, ref))
    return float(np.std(vals)) if len(vals) >= 5 else float("nan")


def image_geometry(tracks: Tracks, pair_axes_deg: list[float], model: str, seed: int = 0) -> ImageGeometry:
    """The tilt axis and relative tilts the images show, with uncertainties (module docstring, step 1).

    Args:
        tracks: the series' tracks (px).
        pair_axes_deg: tilt-axis lines of the view pairs from their affine fundamental matrices.
        model: factorization model.
        seed: bootstrap seed.
    """
    n_f = tracks.n_views
    complete = int(tracks.visible.all(axis=0).sum())
    if n_f >= 3 and complete >= 8:
        fact = factorize(tracks, model=model)
        tilts = np.asarray(fact.relative_tilts_deg, dtype=float)
        sd = None
        axis_sd = float("nan")
        if complete >= 40:
            unc = tilt_uncertainty(tracks, model, reference_tilts_deg=tilts, n_bootstrap=30, seed=seed)
            sd = np.asarray(unc.uncertainty_deg, dtype=float)
            xy = tracks.xy[:, tracks.visible.all(axis=0)]
            axis_sd = _axis_bootstrap(xy, model, 30, seed)
        return ImageGeometry(fact.tilt_axis_deg, axis_sd, tilts, sd, fact, "factorization")
    if not pair_axes_deg:
        raise TopographError(
            "the images give no tilt axis (no view pair has consistent matches)",
            "check that the images overlap and differ by a small tilt",
        )
    a = np.deg2rad(2.0 * np.asarray(pair_axes_deg))
    axis = wrap_axis_deg(0.5 * np.rad2deg(np.arctan2(np.sin(a).mean(), np.cos(a).mean())))
    spread = [abs(_line_diff_deg(v, axis)) for v in pair_axes_deg]
    sd = float(np.std(spread)) if len(spread) > 1 else float("nan")
    return ImageGeometry(axis, sd, None, None, None, "affine epipolar geometry")


def metadata_geometry(images: ImageSet, tilt_axis_deg: float | None) -> MetadataGeometry:
    """Collect the metadata's tilts, axis and rotations with their provenance."""
    tilts = images.tilts_deg
    have = all(t is not None for t in tilts)
    rots = np.array([im.metadata.stage_rotation_deg or 0.0 for im in images.images], dtype=float)
    src_t = next((im.metadata.source.get("tilt_deg") for im in images.images if im.metadata.tilt_deg is not None), None)
    src_a = next(
        (im.metadata.source.get("tilt_axis_deg") for im in images.images if im.metadata.tilt_axis_deg is not None),
        None,
    )
    return MetadataGeometry(
        tilts_deg=np.array(tilts, dtype=float) if have else None,
        tilt_axis_deg=tilt_axis_deg,
        stage_rotations_deg=rots - rots[0],
        tilt_source=src_t,
        axis_source=src_a,
    )


# ----------------------------------------------------------------------------------------------------
# comparison


def _axis_cause(meta: float, img: float, tol: float) -> str:
    if abs(_line_diff_deg(meta, -img)) <= tol:
        return "the angle is measured clockwise where topograph measures it counter-clockwise (opposite angle sense)"
    if abs(abs(_line_diff_deg(meta, img)) - 90.0) <= tol:
        return "the images were rotated by 90° after capture, or a 90° scan rotation is not in the tags"
    return "a scan rotation or an image rotation that the tags do not record"


def compare_geometry(img: ImageGeometry, meta: MetadataGeometry) -> tuple[dict[str, Any], list[str]]:
    """Compare metadata with the images (module docstring, step 3).

    Returns:
        ``(checks, warnings)``: JSON-ready figures (``axis_agrees``, ``tilts_agree``, the differences) and
        one warning line per contradicting field.
    """
    checks: dict[str, Any] = {"axis_agrees": None, "tilts_agree": None}
    warnings: list[str] = []
    sd_a = img.tilt_axis_sd_deg if np.isfinite(img.tilt_axis_sd_deg) else 0.0
    tol_a = max(N_SIGMA * sd_a, AXIS_FLOOR_DEG)
    if meta.tilt_axis_deg is not None:
        diff = _line_diff_deg(img.tilt_axis_deg, meta.tilt_axis_deg)
        checks["axis_difference_deg"] = diff
        checks["axis_agrees"] = bool(abs(diff) <= tol_a)
        if not checks["axis_agrees"]:
            cause = _axis_cause(meta.tilt_axis_deg, img.tilt_axis_deg, tol_a)
            warnings.append(
                f"tilt_axis_deg ({meta.axis_source}) says {meta.tilt_axis_deg:.2f}° but the images show "
                f"{img.tilt_axis_deg:.2f}° ± {sd_a:.2f}°: likely {cause} — the axis of the images is used"
            )
    rel_meta = meta.relative_tilts_deg
    if rel_meta is not None and img.relative_tilts_deg is not None:
        tau = img.relative_tilts_deg
        sign = 1.0 if float(tau @ rel_meta) >= 0 else -1.0  # the branch is decided later; compare magnitudes
        err = sign * tau - rel_meta
        sd = img.tilts_sd_deg if img.tilts_sd_deg is not None else np.zeros_like(tau)
        tol = np.maximum(N_SIGMA * sd, np.maximum(TILT_FLOOR_DEG, TILT_FLOOR_FRACTION * np.abs(rel_meta)))
        checks["relative_tilt_differences_deg"] = err.tolist()
        checks["tilts_agree"] = bool(np.all(np.abs(err) <= tol))
        if not checks["tilts_agree"]:
            f = int(np.argmax(np.abs(err) - tol))
            warnings.append(
                f"tilt_deg ({meta.tilt_source}) gives relative tilts {np.round(rel_meta, 2).tolist()}° but the images "
                f"show {np.round(sign * tau, 2).tolist()}° (view {f}: {err[f]:+.2f}° beyond ± {tol[f]:.2f}°): likely "
                "wrong or swapped tilt values, or tilts of another series — the tilts of the images are used"
            )
    return checks, warnings


# ----------------------------------------------------------------------------------------------------
# depth sign


def _ring(p: np.ndarray) -> np.ndarray:
    """Points in the outer 15 % of the footprint's bounding box (robust 1–99 % extent)."""
    lo, hi = np.percentile(p[:, :2], 1, axis=0), np.percentile(p[:, :2], 99, axis=0)
    rel = (p[:, :2] - lo) / np.maximum(hi - lo, 1e-12)
    return (rel.min(axis=1) < 0.15) | (rel.max(axis=1) > 0.85)


def _base_plane_skew(p: np.ndarray) -> tuple[float, float]:
    """Asymmetry of the relief about a base plane fitted to the outer 15 % of the footprint, and how far the
    ring is from a plane (robust σ of its residuals over the relief range) (see :func:`protrusion_score`).

    The asymmetry is measured from the base plane, not from the median point: when most tracked points lie
    on the grain (a faint substrate texture, a large grain) the median sits on the grain's top and a
    median-centred skew would call the grain a pit."""
    border = _ring(p)
    if border.sum() < 10:
        border = np.ones(len(p), dtype=bool)
    a = np.column_stack([p[:, 0], p[:, 1], np.ones(len(p))])
    use = border.copy()
    coef = np.zeros(3)
    for _ in range(3):
        coef = np.linalg.lstsq(a[use], p[use, 2], rcond=None)[0]
        r = p[:, 2] - a @ coef
        mad = 1.4826 * np.median(np.abs(r[use] - np.median(r[use]))) + 1e-12
        keep = border & (np.abs(r - np.median(r[use])) < 2.5 * mad)
        if keep.sum() < 10:
            break
        use = keep
    r = p[:, 2] - a @ coef
    r = r - np.median(r[use])  # heights above the base plane
    p1, p99 = np.percentile(r, [1, 99])
    if p99 - p1 <= 0:
        return 0.0, 1.0
    ring_sigma = 1.4826 * np.median(np.abs(r[border] - np.median(r[border])))
    return float((p99 + p1) / (p99 - p1)), float(ring_sigma / (p99 - p1))


def _dome(p: np.ndarray) -> float:
    """Centre-minus-rim median height over the relief range, about the median of the points (a grain that
    fills the field, or a grain amid particles on a featureless substrate, where most points lie on it)."""
    xy = p[:, :2]
    r = np.linalg.norm(xy - np.median(xy, axis=0), axis=1)
    r_max = np.percentile(r, 95) + 1e-12
    inner, outer = r < 0.4 * r_max, r > 0.7 * r_max
    p1, p99 = np.percentile(p[:, 2], [1, 99])
    if inner.sum() < 3 or outer.sum() < 3 or p99 <= p1:
        return 0.0
    return float((np.median(p[inner, 2]) - np.median(p[outer, 2])) / (p99 - p1))


def protrusion_score(points: np.ndarray) -> float:
    """How much the specimen protrudes from its surroundings (> 0) or recedes into them (< 0), about [−1, 1].

    Primary, when the outer 15 % of the cloud's footprint is a plane (a matched substrate around a grain,
    also when the grain is off-centre, touches the border or has a neighbour): a base plane
    ``Z = a X + b Y + c`` is fitted there (least squares, trimmed at 2.5 robust σ) and with the residuals r
    of all points (heights above the base plane, zero at the ring's median) the score is
    ``(p99 + p1) / (p99 − p1)``: positive when the relief reaches farther above the base than below it (a
    grain, a particle, pollen), negative for a pit. When the ring is
    not a plane (robust σ over 5 % of the relief: a grain that fills the field, whose rim is its own flank,
    or particles around a grain on a featureless substrate) or the asymmetry is weak (< 0.15), the median
    height within 40 % of the radius about the points' median minus that beyond 70 %, over the relief
    range, decides (a dome is positive).
    """
    p = np.asarray(points, dtype=float)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) < 20:
        return 0.0
    skew, ring_rough = _base_plane_skew(p)
    if abs(skew) >= 0.15 and ring_rough < 0.05:
        return skew
    return _dome(p)


def relative_tilts_about(cameras: tuple[AffineCamera, ...], axis_deg: float) -> np.ndarray:
    """Relative tilts of the cameras, right-handed about the axis *direction* ``axis_deg`` (not only its line)."""
    tilts, axis, _ = relative_tilts(cameras)
    if np.cos(np.deg2rad(axis - axis_deg)) < 0:
        tilts = -tilts
    return tilts


def choose_branch(
    cameras: tuple[AffineCamera, ...],
    points: np.ndarray,
    meta: MetadataGeometry,
    cfg: CameraConfig,
    geometry_agrees: bool = True,
) -> BranchChoice:
    """Decide between ``(R, X)`` (as given) and its depth-reversed twin ``(M R M, M X)``.

    Witnesses: the metadata tilt sense (only when :attr:`MetadataGeometry.sense_known`): the branch on which
    the relative tilts about the metadata axis direction have the sign of the metadata's; protrusion: the
    branch on which :func:`protrusion_score` is positive (the twin has the opposite score). ``cfg.relief``:
    ``auto`` — agreeing witnesses are stated; on disagreement the protrusion wins with one warning when it is
    clear (``|score| ≥ PROTRUSION_CONFIDENT``) or when the metadata contradicts the images' tilt axis or tilts
    (``geometry_agrees`` False: its sense is doubtful too); otherwise the metadata, which agrees with the
    images' geometry, wins with one warning. A single witness decides alone (warned when it is a weak
    relief); with none, the views are taken in increasing tilt order (warned). ``metadata``, ``protrude``,
    ``recess`` force one witness. ``cfg.flip_relief`` inverts the result.
    """
    meta_vote: bool | None = None
    if meta.sense_known and meta.relative_tilts_deg is not None and np.ptp(meta.relative_tilts_deg) > 0:
        tau = relative_tilts_about(cameras, float(meta.tilt_axis_deg))
        score = float(tau @ meta.relative_tilts_deg)
        if abs(score) > 1e-9:
            meta_vote = score < 0
    prot = protrusion_score(points)
    prot_vote = None if abs(prot) < PROTRUSION_MIN else prot < 0
    clear = abs(prot) >= PROTRUSION_CONFIDENT
    warning = None
    confidence = "forced"
    mode = cfg.relief
    flip_hint = "--flip-relief inverts it; --relief metadata|protrude|recess chooses the witness"
    if mode == "metadata":
        if meta_vote is None:
            warning = (
                "--relief metadata: the metadata tilt sense is unknown (no tilt axis direction given with the "
                "tilts); the relief is taken to protrude instead"
            )
            mode = "protrude"
        else:
            mirrored, rule = meta_vote, "metadata tilt sense (--relief metadata)"
    if mode in ("protrude", "recess"):
        want_up = mode == "protrude"
        if prot_vote is None:
            mirrored = meta_vote if meta_vote is not None else _order_vote(cameras)
            rule = f"--relief {mode}, but the relief is too flat to tell; " + (
                "metadata tilt sense" if meta_vote is not None else "views in increasing tilt order"
            )
            confidence = "forced" if meta_vote is not None else "undecided"
        else:
            mirrored = prot_vote if want_up else not prot_vote
            rule = (
                "the specimen protrudes (--relief protrude)"
                if want_up
                else "the specimen is a recess (--relief recess)"
            )
    elif mode == "auto":
        if meta_vote is not None and prot_vote is not None:
            sense = f"the metadata tilts ({meta.tilt_source}, axis {meta.tilt_axis_deg:g}° from {meta.axis_source})"
            if meta_vote == prot_vote:
                mirrored, confidence = prot_vote, "confirmed"
                rule = "the metadata tilt sense and the protruding specimen agree"
            elif clear or not geometry_agrees:
                mirrored, confidence = prot_vote, "contested"
                rule = "the specimen protrudes (it contradicts the metadata tilt sense)"
                warning = (
                    f"tilt sense: {sense} would make the specimen a recess; likely an opposite tilt sense in the tags "
                    "or on the command line (or images rotated by 180°) — the protruding branch is used (--relief "
                    "metadata or recess to override)"
                )
            else:
                mirrored, confidence = meta_vote, "contested"
                rule = "the metadata tilt sense (the relief contradicts it only weakly)"
                warning = (
                    f"tilt sense: {sense} make the specimen a recess, but the relief says so only weakly "
                    f"(protrusion score {prot:+.2f}, below ±{PROTRUSION_CONFIDENT:g}) and the metadata agrees with "
                    f"the images' tilt axis and tilts — the metadata branch is used; check the relief ({flip_hint})"
                )
        elif prot_vote is not None:
            mirrored, rule = prot_vote, "the specimen protrudes from the substrate (metadata tilt sense unknown)"
            confidence = "confident" if clear else "weak"
            if not clear:
                warning = (
                    f"depth branch: only a weak relief decides which way is up (protrusion score {prot:+.2f}, below "
                    f"±{PROTRUSION_CONFIDENT:g}) and the tilt sense is unknown; check that the specimen is the right "
                    f"way up ({flip_hint}; --tilts with --tilt-axis-deg add the tilt sense)"
                )
        elif meta_vote is not None:
            mirrored, rule = meta_vote, "metadata tilt sense (the relief is too flat to tell)"
            confidence = "confident"
        else:
            mirrored = _order_vote(cameras)
            rule = "no witness: the views are taken in increasing tilt order (flat relief, tilt sense unknown)"
            confidence = "undecided"
            warning = (
                f"depth branch undecided: the relief is too flat to tell up from down (protrusion score {prot:+.2f}) "
                f"and the tilt sense is unknown; the views were taken in increasing tilt order ({flip_hint}; "
                "--tilts with --tilt-axis-deg add the tilt sense)"
            )
    if cfg.flip_relief:
        mirrored = not mirrored
        rule += "; inverted by --flip-relief"
        confidence = "forced"
    which = "depth-reversed twin" if mirrored else "as estimated"
    note = f"depth branch: {which} — {rule} (protrusion score {prot:+.2f}, {confidence})"
    return BranchChoice(mirrored, meta_vote, prot_vote, prot, rule, note, warning, confidence)


def _order_vote(cameras: tuple[AffineCamera, ...]) -> bool:
    """The twin is taken when the last view's tilt relative to the first is negative (increasing order)."""
    tilts = relative_tilts(cameras)[0]
    ref = tilts[-1] if abs(tilts[-1]) > 1e-6 else tilts[int(np.argmax(np.abs(tilts)))]
    return bool(ref < 0)


# ----------------------------------------------------------------------------------------------------
# cameras


def _centroids(tracks: Tracks) -> np.ndarray:
    full = tracks.visible.all(axis=0)
    if full.sum() < 4:
        raise TopographError(
            "too few points are seen in every view to place the cameras",
            "add views with more overlap or use fewer, closer tilts",
        )
    return np.nanmean(tracks.xy[:, full, :], axis=1)


def metadata_cameras(
    tracks: Tracks, tilts_deg: np.ndarray, tilt_axis_deg: float, rotations_deg: np.ndarray, pixel_size_um: float | None
) -> tuple[AffineCamera, ...]:
    """Cameras from stage tilts: ``R = R₀ Rot(u, θ_f) Rz(φ_f)``, ``k = 1 / pixel size``, s = 0.

    The translations are not in the metadata; they follow from the track centroids (world origin at the
    centroid of the points seen in every view, ``t_f = mean_p x_fp``). The tilt of the first view is kept:
    the world is the untilted stage frame.
    """
    cen = _centroids(tracks)
    return tuple(
        camera_from_stage(float(tilts_deg[f]), tilt_axis_deg, float(rotations_deg[f]), pixel_size_um, cen[f])
        for f in range(len(tilts_deg))
    )


def _stage_frame(cameras: tuple[AffineCamera, ...], axis_deg: float, first_tilt_deg: float) -> tuple[AffineCamera, ...]:
    """Rotate the world of factorization cameras (view 0 untilted) so that view 0 has the metadata tilt:
    ``R_f ← R_f Rot(u, θ_0)`` puts the substrate in the X, Y plane when θ_0 is the true stage tilt."""
    if abs(first_tilt_deg) < 1e-12:
        return cameras
    w = rotation_about_axis(tilt_axis_vector(axis_deg), np.deg2rad(first_tilt_deg))
    return tuple(replace(c, rotation=c.rotation @ w) for c in cameras)


def pair_axes_deg(matches: Any) -> list[float]:
    """Tilt-axis lines of the matched view pairs (``matches.pairs[*].fundamental``), degrees."""
    from topograph.geometry.epipolar import tilt_axis_from_fundamental

    return [tilt_axis_from_fundamental(p.fundamental) for p in matches.pairs if p.fundamental is not None]


def estimate_cameras(
    images: ImageSet,
    tracks: Tracks,
    matches: Any,
    cfg: CameraConfig,
    tilt_axis_deg: float | None,
    pixel_size_um: float | None,
) -> CameraEstimate:
    """Cameras of the series (module docstring, steps 1–5).

    Args:
        images: the series (metadata per view).
        tracks: tracks in px.
        matches: the pairwise matches (:class:`topograph.sem.sparse.SparseMatches`; their affine fundamental
            matrices give the tilt-axis line with 2 views).
        cfg: camera settings (``source``, ``relief``, ``flip_relief``, ``model``).
        tilt_axis_deg: the metadata tilt-axis direction, or None.
        pixel_size_um: pixel size (world in µm), or None (world in px).

    Raises:
        TopographError: cameras cannot be had from what is given (e.g. 2 views without tilts, or
            ``--cameras metadata`` without tilts).
    """
    n = len(images)
    meta = metadata_geometry(images, tilt_axis_deg)
    source = "images" if cfg.source == "factorization" else cfg.source
    if n < 3 and meta.tilts_deg is None:
        raise TopographError(
            f"{n} images without tilt metadata: the images alone give the cameras only from 3 views",
            "add a third tilt, or give the tilts with --tilts (and the pixel size with --pixel-size-um)",
        )
    if source == "metadata" and meta.tilts_deg is None:
        missing = [im.name for im in images.images if im.metadata.tilt_deg is None]
        raise TopographError(
            f"no tilt angle for {', '.join(missing)}",
            "give --tilts (one per image), a sidecar file, or use --cameras images / auto",
        )
    if source == "images" and n < 3:
        raise TopographError(
            "--cameras images needs at least 3 views (two affine views do not fix the tilt angle)",
            "use --cameras auto with the stage tilts, or add a third view",
        )
    img = image_geometry(tracks, pair_axes_deg(matches), cfg.model)
    notes = [f"tilt axis from the images ({img.source}): {img.tilt_axis_deg:.2f}° ± {img.tilt_axis_sd_deg:.2f}°"]
    if img.relative_tilts_deg is not None:
        sd = "" if img.tilts_sd_deg is None else f" ± {np.round(img.tilts_sd_deg, 3).tolist()}"
        notes.append(
            f"relative tilts from the images: {np.round(img.relative_tilts_deg, 3).tolist()}°{sd} (up to sign)"
        )
    checks, warnings = (
        compare_geometry(img, meta) if meta.tilts_deg is not None or meta.tilt_axis_deg is not None else ({}, [])
    )
    stage_rel_rot = bool(np.ptp(meta.stage_rotations_deg) > 0.1)

    # the axis *direction*: the image line, pointing the metadata's way when it gives one
    axis_dir = img.tilt_axis_deg
    if meta.tilt_axis_deg is not None and np.cos(np.deg2rad(axis_dir - meta.tilt_axis_deg)) < 0:
        axis_dir += 180.0
    sd_img = img.tilt_axis_sd_deg if np.isfinite(img.tilt_axis_sd_deg) else np.inf
    if checks.get("axis_agrees") and meta.axis_source in ("cli", "sidecar") and sd_img > META_AXIS_SD_DEG:
        axis_dir = float(meta.tilt_axis_deg)  # the more precise of two agreeing estimates
        notes.append(
            f"tilt axis {axis_dir:.2f}° as given ({meta.axis_source}): it agrees with the images, whose estimate "
            f"is less precise (± {sd_img:.2f}°)"
        )
    if source == "metadata":
        axis_used = meta.tilt_axis_deg if meta.tilt_axis_deg is not None else axis_dir
        use_meta = True
    elif source == "images":
        use_meta = False
        axis_used = axis_dir
    else:  # auto
        use_meta = meta.tilts_deg is not None and (checks.get("tilts_agree") is not False or stage_rel_rot)
        axis_used = axis_dir if not stage_rel_rot or meta.tilt_axis_deg is None else meta.tilt_axis_deg
    if use_meta:
        cams = metadata_cameras(tracks, meta.tilts_deg, axis_used, meta.stage_rotations_deg, pixel_size_um)
        cam_source = "metadata"
        notes.append(
            f"cameras from the metadata tilts ({meta.tilt_source}) about the tilt axis {wrap_axis_deg(axis_used):.2f}° "
            f"({'metadata' if source == 'metadata' and meta.tilt_axis_deg is not None else 'images'}); s = 0"
        )
    else:
        fact = img.factorization
        assert fact is not None
        cams = fact.cameras
        if pixel_size_um is not None:
            # world in µm: the first view's scale k = 1 px/px becomes 1 / pixel size in px/µm
            cams = tuple(replace(c, scale=c.scale / pixel_size_um) for c in cams)
        if meta.tilts_deg is not None:
            first = float(meta.tilts_deg[0])
            cams = _stage_frame(cams, fact.tilt_axis_deg, first)
        cam_source = "factorization"
        notes.append(f"cameras from the images ({fact.model} factorization)")
        notes.extend(s for s in fact.notes if not s.startswith("mirror branch"))
    pts = triangulate(cams, tracks)
    geometry_agrees = checks.get("axis_agrees") is not False and checks.get("tilts_agree") is not False
    branch = choose_branch(cams, pts, meta, cfg, geometry_agrees)
    if branch.mirrored:
        cams, pts = mirror(cams, pts)
    notes.append(branch.note)
    if branch.warning:
        warnings.append(branch.warning)
    for w in warnings:
        log.warning(w)
    rms = per_view_rms_px(cams, pts, tracks)
    log.debug("camera candidate reprojection RMS %s px", np.round(rms, 3).tolist())
    return CameraEstimate(
        cameras=tuple(cams),
        source=cam_source,
        tilt_axis_deg=wrap_axis_deg(axis_used),
        notes=tuple(notes),
        warnings=tuple(warnings),
        image_geometry=img,
        branch=branch,
        checks=checks,
    )


def camera_model_failure(rms_before_px: np.ndarray, rms_after_px: np.ndarray, max_rms_px: float) -> str | None:
    """One line when bundle adjustment leaves a failed camera model: overall RMS above ``max_rms_px`` or
    clearly worse than it started; None otherwise.

    The adjustment minimises a robust (soft-L1) cost, not the plain RMS, so a correct model may end a few per
    cent above its start in RMS (0.40 → 0.41 px on rendered 4 MP series); a rise counts beyond 10 % + 0.05 px.
    """
    before = float(np.sqrt(np.nanmean(np.square(rms_before_px))))
    after = float(np.sqrt(np.nanmean(np.square(rms_after_px))))
    if after > max_rms_px or after > 1.10 * before + 0.05:
        how = "rose" if after > before else "ended"
        return (
            f"failed camera model: bundle adjustment {how} from {before:.2f} to {after:.2f} px RMS (limit "
            f"{max_rms_px:g} px) — the cameras do not fit the images; try --cameras images (ignore the metadata "
            "geometry), check --tilts / --tilt-axis-deg, or check that the images belong to one tilt series"
        )
    return None
