"""Joint solution of pairwise feature links: flat tilted cameras fitted to every link at once, with links
that disagree with the others (loop closure) rejected.

Chaining pairwise transforms along a spanning tree accumulates every link's error in the images far from
the root, and one wrong link (repeated texture) places a whole branch wrongly; nothing checks either.
Here the links are solved together:

1. **linear similarity solve**: each image ``k`` maps its centred pixels ``z`` (complex) to the object plane
   by ``a_k z + b_k``; every inlier match ``(z_i, z_j)`` gives the linear equation
   ``a_i z_i + b_i - a_j z_j - b_j = 0``, solved by least squares with the root image fixed
   (``a = 1, b = 0``);
2. **flat tilted cameras**: from that start, every image's nadir, height ``Z = f exp(l)``, tilt and in-plane
   angle are fitted to the object-plane misfit ``X_i(u_i) - X_j(u_j)`` of every match (the model's own
   back-projection, :mod:`topograph.meso.functional.projection`; Cauchy loss; a weak prior keeps the tilts
   defined where the matches leave them free);
3. **loop closure**: a link whose median misfit exceeds 4x the median over links (and 3 feature pixels) is
   inconsistent with the others — with a correct solution its matches would agree — and is dropped; the
   solve is repeated without it (up to 4 times).

The result is brought to the model's gauge: geometric-mean camera height = focal length (object unit ~ one
image pixel), mean position zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from topograph.geometry.levenberg_marquardt import levenberg_marquardt
from topograph.meso.functional.projection import normal_z, projection_named, rotate_in_plane
from topograph.meso.init_features import PairLink

log = logging.getLogger("topograph")

_PER_IMAGE = 6  # optical-axis footprint (2), log height, tilt (2), in-plane angle
_SAMPLES_PER_LINK = 120
TIES_PER_LINK = 200
"""Matches of each link kept as ties of the photometric rounds (a fixed random subset; more add cost, not
information: the cameras have 6 unknowns each)."""


@dataclass(frozen=True)
class FeatureTies:
    """The inlier feature correspondences of the kept links, flattened: match ``m`` says that pixel
    ``uv_i[m]`` of image ``image_i[m]`` and pixel ``uv_j[m]`` of image ``image_j[m]`` show the same point.

    Pixels are those of the images the engine works on (the model's pixel frame, ``MesoImages.pixels``);
    ``noise_px`` is the keypoint noise in those pixels (one pixel of the images SIFT ran on), the unit of the
    rounds' tie term (:mod:`topograph.meso.optimise.ties`). ``link`` (M,) numbers each match's link."""

    uv_i: np.ndarray
    uv_j: np.ndarray
    image_i: np.ndarray
    image_j: np.ndarray
    link: np.ndarray
    noise_px: float

    @property
    def n_matches(self) -> int:
        return len(self.uv_i)

    def renumbered(self, keep: list[int]) -> FeatureTies:
        """The ties among the ``keep`` images, renumbered to their positions in ``keep``."""
        size = 1 + max(int(self.image_i.max(initial=-1)), int(self.image_j.max(initial=-1)), max(keep, default=-1))
        index = np.full(size, -1)
        index[keep] = np.arange(len(keep))
        ok = (index[self.image_i] >= 0) & (index[self.image_j] >= 0)
        return FeatureTies(
            self.uv_i[ok], self.uv_j[ok], index[self.image_i[ok]], index[self.image_j[ok]], self.link[ok],
            self.noise_px,
        )  # fmt: skip


def feature_ties(links: list[PairLink], noise_px: float, per_link: int = TIES_PER_LINK, seed: int = 0) -> FeatureTies:
    """:class:`FeatureTies` of ``links``: at most ``per_link`` matches of each (fixed random subset)."""
    gen = np.random.default_rng(seed)
    picks = [
        np.sort(gen.choice(lk.inliers, per_link, replace=False)) if lk.inliers > per_link else np.arange(lk.inliers)
        for lk in links
    ]
    if not links:
        empty = np.zeros(0, np.int64)
        return FeatureTies(np.zeros((0, 2)), np.zeros((0, 2)), empty, empty, empty, float(noise_px))
    return FeatureTies(
        uv_i=np.concatenate([lk.uv_i[p] for lk, p in zip(links, picks, strict=True)]).astype(float),
        uv_j=np.concatenate([lk.uv_j[p] for lk, p in zip(links, picks, strict=True)]).astype(float),
        image_i=np.concatenate([np.full(len(p), lk.i, np.int64) for lk, p in zip(links, picks, strict=True)]),
        image_j=np.concatenate([np.full(len(p), lk.j, np.int64) for lk, p in zip(links, picks, strict=True)]),
        link=np.concatenate([np.full(len(p), k, np.int64) for k, p in enumerate(picks)]),
        noise_px=float(noise_px),
    )


@dataclass(frozen=True)
class LinkSolution:
    """Cameras of :func:`solve_links` in the model's parameterisation (see
    :class:`topograph.meso.init_features.FeatureInit`), the links kept, the pairs rejected and the kept
    links' matches as ties of the photometric rounds."""

    positions: np.ndarray
    angles: np.ndarray
    tilts: np.ndarray
    log_scales: np.ndarray
    linked: np.ndarray
    residual_px: np.ndarray
    links: list[PairLink]
    rejected: list[tuple[int, int]]
    ties: FeatureTies


def _component(links: list[PairLink], n: int, root: int) -> np.ndarray:
    """(N,) images connected to ``root`` through ``links``."""
    adj = [[] for _ in range(n)]
    for link in links:
        adj[link.i].append(link.j)
        adj[link.j].append(link.i)
    seen = np.zeros(n, bool)
    stack = [root]
    seen[root] = True
    while stack:
        k = stack.pop()
        for m in adj[k]:
            if not seen[m]:
                seen[m] = True
                stack.append(m)
    return seen


def _samples(links: list[PairLink], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """At most ``_SAMPLES_PER_LINK`` matches of every link (fixed random subset): ``(uv_i, uv_j, i, j, link)``."""
    gen = np.random.default_rng(seed)
    ui, uj, ii, jj, ll = [], [], [], [], []
    for k, link in enumerate(links):
        pick = np.arange(link.inliers)
        if link.inliers > _SAMPLES_PER_LINK:
            pick = np.sort(gen.choice(link.inliers, _SAMPLES_PER_LINK, replace=False))
        ui.append(link.uv_i[pick])
        uj.append(link.uv_j[pick])
        ii.append(np.full(len(pick), link.i))
        jj.append(np.full(len(pick), link.j))
        ll.append(np.full(len(pick), k))
    return tuple(np.concatenate(v) for v in (ui, uj, ii, jj, ll))  # type: ignore[return-value]


def similarity_solve(
    uv_i: np.ndarray, uv_j: np.ndarray, ii: np.ndarray, jj: np.ndarray, n: int, centre: np.ndarray, root: int
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarities ``X = a_k z + b_k`` of every image (module docstring, step 1).

    Images without matches keep ``a = 1, b = 0``. Returns complex ``(a, b)`` (N,)."""
    zi = (uv_i[:, 0] - centre[0]) + 1j * (uv_i[:, 1] - centre[1])
    zj = (uv_j[:, 0] - centre[0]) + 1j * (uv_j[:, 1] - centre[1])
    unknown = np.full(n, -1)
    free = [k for k in range(n) if k != root]
    unknown[free] = np.arange(len(free))
    m = len(zi)
    mat = np.zeros((m, 2 * len(free)), complex)
    rhs = np.zeros(m, complex)
    rows = np.arange(m)
    for img, z, sign in ((ii, zi, 1.0), (jj, zj, -1.0)):
        is_root = img == root
        rhs[is_root] -= sign * z[is_root]
        col = unknown[img]
        ok = ~is_root
        mat[rows[ok], 2 * col[ok]] = sign * z[ok]
        mat[rows[ok], 2 * col[ok] + 1] = sign
    sol, *_ = np.linalg.lstsq(mat, rhs, rcond=None)
    a, b = np.ones(n, complex), np.zeros(n, complex)
    a[free], b[free] = sol[0::2], sol[1::2]
    return a, b


class _FlatFit:
    """The flat-camera least-squares problem of step 2 (root image's nadir, height and angle held)."""

    def __init__(self, sample: tuple[np.ndarray, ...], n: int, centre: np.ndarray, focal: float, projection: str,
                 root: int, tilt_prior: float, robust: float, x0: np.ndarray) -> None:  # fmt: skip
        uv_i, uv_j, self.ii, self.jj, self.ll = sample
        self.n, self.root, self.focal = n, root, focal
        self.xy_i = torch.as_tensor(uv_i - centre, dtype=torch.float64)[:, None, :]
        self.xy_j = torch.as_tensor(uv_j - centre, dtype=torch.float64)[:, None, :]
        self.backproject = projection_named(projection).backproject
        self.tilt_prior = tilt_prior
        self.c2 = robust**2
        self.x0 = x0
        held = {_PER_IMAGE * root + k for k in (0, 1, 2, 5)}
        self.free = np.array([c for c in range(_PER_IMAGE * n) if c not in held])

    def points(self, cams: torch.Tensor, img: np.ndarray, xy: torch.Tensor) -> torch.Tensor:
        """(M, 2) object-plane points of matches ``xy`` (M, 1, 2) of images ``img`` (M,)."""
        return self._points_of(cams[img], xy)

    def full(self, x: np.ndarray) -> torch.Tensor:
        """(N, 6) float64 cameras of the free unknowns ``x`` (the held ones at their start)."""
        v = self.x0.copy()
        v[self.free] = x
        return torch.as_tensor(v, dtype=torch.float64).reshape(self.n, _PER_IMAGE)

    def misfit(self, cams: torch.Tensor) -> torch.Tensor:
        """(M, 2) object-plane misfit of every match."""
        return self.points(cams, self.ii, self.xy_i) - self.points(cams, self.jj, self.xy_j)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """Match misfits (2 M) then the tilt prior (2 N)."""
        cams = self.full(x)
        return np.concatenate((self.misfit(cams).numpy().ravel(), self.tilt_prior * cams[:, 3:5].numpy().ravel()))

    def cost(self, x: np.ndarray) -> float:
        """Sum of the Cauchy losses ``log(1 + r^2 / c^2)``."""
        return float(np.log1p(self.residuals(x) ** 2 / self.c2).sum())

    def normal_equations(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """IRLS-weighted ``(J^T W J, J^T W r, cost)``; each match's rows by one backward pass over
        per-match copies of its two cameras (exact derivatives)."""
        cams = self.full(x)
        m, n6 = len(self.ii), _PER_IMAGE * self.n
        ci = cams[self.ii].clone().requires_grad_(True)
        cj = cams[self.jj].clone().requires_grad_(True)
        diff = self._points_of(ci, self.xy_i) - self._points_of(cj, self.xy_j)
        jac = np.zeros((2 * m + 2 * self.n, n6))
        rows = np.arange(m)
        for axis in range(2):
            gi, gj = torch.autograd.grad(diff[:, axis].sum(), (ci, cj), retain_graph=axis == 0)
            block = np.zeros((m, n6))
            for img, grad in ((self.ii, gi), (self.jj, gj)):
                cols = _PER_IMAGE * img[:, None] + np.arange(_PER_IMAGE)
                np.add.at(block, (np.repeat(rows, _PER_IMAGE), cols.ravel()), grad.numpy().ravel())
            jac[axis : 2 * m : 2] = block
        tilt_cols = (_PER_IMAGE * np.arange(self.n)[:, None] + np.array([3, 4])).ravel()
        jac[2 * m + np.arange(2 * self.n), tilt_cols] = self.tilt_prior
        r = np.concatenate((diff.detach().numpy().ravel(), self.tilt_prior * cams[:, 3:5].numpy().ravel()))
        jac = jac[:, self.free]
        w = 1.0 / (1.0 + r * r / self.c2)
        hess = jac.T @ (jac * w[:, None])
        return hess, jac.T @ (w * r), float(np.log1p(r * r / self.c2).sum())

    def _points_of(self, c: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        z = self.focal * torch.exp(c[:, 2])
        tilt = c[:, 3:5]
        nadir = c[:, :2] + z[:, None] * tilt / normal_z(tilt)[:, None]
        rel = self.backproject(rotate_in_plane(xy, c[:, 5]), tilt, z, torch.tensor(self.focal, dtype=torch.float64))
        return rel[:, 0] + nadir


def _start(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flat-camera unknowns (N, 6) of the similarities: nadir ``b``, ``l = log |a|``, no tilt, angle ``arg a``."""
    cams = np.zeros((len(a), _PER_IMAGE))
    cams[:, 0], cams[:, 1] = b.real, b.imag
    cams[:, 2] = np.log(np.maximum(np.abs(a), 1e-6))
    cams[:, 5] = np.angle(a)
    return cams


def fit_cameras(
    links: list[PairLink],
    n: int,
    centre: np.ndarray,
    focal: float,
    projection: str,
    root: int,
    noise_px: float,
    iterations: int = 30,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2 of the module docstring on ``links``: ``(cams (N, 6), per-match misfit norm (M,), link index
    of each match (M,))``; cameras of images the links do not reach are meaningless."""
    sample = _samples(links)
    a, b = similarity_solve(*sample[:4], n, centre, root)
    x0 = _start(a, b).ravel()
    problem = _FlatFit(sample, n, centre, focal, projection, root, 0.05 * noise_px, 2.0 * noise_px, x0)
    x = levenberg_marquardt(x0[problem.free], problem.normal_equations, problem.cost, iterations).x
    with torch.no_grad():
        cams = problem.full(x)
        err = np.linalg.norm(problem.misfit(cams).numpy(), axis=1) / np.exp(cams[sample[2], 2].numpy())
    return cams.numpy(), err, sample[4]


def solve_links(
    links: list[PairLink],
    n: int,
    size: tuple[int, int],
    focal: float,
    projection: str = "expansion",
    root: int | None = None,
    noise_px: float = 1.0,
    max_rejections: int = 4,
) -> LinkSolution:
    """Cameras of every image from its links, with inconsistent links rejected (module docstring).

    Args:
        links: pairwise links (:func:`topograph.meso.init_features.find_links`).
        n: number of images.
        size: ``(width, height)`` of the images.
        focal: focal length, pixels.
        projection: the model's back-projection.
        root: image whose nadir, height and angle fix the frame (None: the best-linked image of the largest
            linked group).
        noise_px: keypoint noise in full-resolution pixels (the feature images' downscale).
        max_rejections: rounds of loop-closure rejection.

    Returns:
        The cameras (zeros for unlinked images) and which images the kept links connect to the root.
    """
    w, h = size
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    links = list(links)
    weight = np.zeros(n)
    for link in links:
        weight[link.i] += link.inliers
        weight[link.j] += link.inliers
    if root is None:
        groups = [_component(links, n, k) for k in range(n)]
        size_of = np.array([g.sum() for g in groups])
        best = size_of == size_of.max()
        root = int(np.argmax(np.where(best, weight, -1.0)))
    rejected: list[tuple[int, int]] = []
    cams = np.zeros((n, _PER_IMAGE))
    err, which = np.zeros(0), np.zeros(0, int)
    for _ in range(max_rejections + 1):
        linked = _component(links, n, root)
        links = [lk for lk in links if linked[lk.i] and linked[lk.j]]
        if not links:
            break
        cams, err, which = fit_cameras(links, n, centre, focal, projection, root, noise_px)
        per_link = np.array([np.median(err[which == k]) for k in range(len(links))])
        limit = max(4.0 * float(np.median(per_link)), 3.0 * noise_px)
        bad = np.flatnonzero(per_link > limit)
        if not bad.size:
            break
        worst = int(bad[np.argmax(per_link[bad])])  # one at a time: a bad link also drags its neighbours
        log.debug("link %d-%d rejected: median misfit %.1f px > %.1f", links[worst].i, links[worst].j,
                  per_link[worst], limit)  # fmt: skip
        rejected.append((links[worst].i, links[worst].j))
        links.pop(worst)
        err, which = np.zeros(0), np.zeros(0, int)
    linked = _component(links, n, root)
    residual = np.full(n, np.nan)
    for k in np.flatnonzero(linked):
        mine = np.zeros(len(err), bool)
        for idx, lk in enumerate(links):
            if k in (lk.i, lk.j):
                mine |= which == idx
        if mine.any():
            residual[k] = float(np.median(err[mine]))
    cams[~linked] = 0.0
    gm = float(cams[linked, 2].mean()) if linked.any() else 0.0
    # object frame scaled so that the geometric-mean camera height is the focal length; cams[:, :2] is
    # already the model's position (where the optical axis meets the plane)
    positions = cams[:, :2] * np.exp(-gm)
    log_scales = np.where(linked, cams[:, 2] - gm, 0.0)
    tilts = cams[:, 3:5]
    positions[linked] -= positions[linked].mean(0)
    positions[~linked] = 0.0
    return LinkSolution(
        positions=positions,
        angles=np.where(linked, cams[:, 5], 0.0),
        tilts=np.where(linked[:, None], tilts, 0.0),
        log_scales=log_scales,
        linked=linked,
        residual_px=residual,
        links=links,
        rejected=rejected,
        ties=feature_ties(links, noise_px),
    )
