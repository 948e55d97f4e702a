"""Can each photo be found in an orthomosaic? An independent check of a meso run's registration.

Each photo (downscaled to ``--photo-size`` long side) is SIFT-matched (RootSIFT, ratio 0.8) against the run's
``orthomosaic.png`` resampled to the photo's ground sampling (``--mosaic-scale`` mosaic pixels per photo
pixel), and a homography is fitted with MAGSAC++. A photo is *found* when the homography has at least
``--min-inliers`` inliers and a local scale within 0.8-1.25 of 1 (a misregistered copy, a swirl or a
wrong scale fail it). Prints one JSON line per photo and a summary line::

    python benchmarks/meso_find_in_mosaic.py OUT/orthomosaic.png photos/*.jpg --mosaic-scale 1.89

(``--mosaic-scale``: the photo pixel's size in mosaic pixels, e.g. 4 input pixels per 900-px photo pixel of
a 3600-px photo / the mosaic's ``pixel_size`` from summary.json.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np


def _root_sift(grey: np.ndarray, n: int) -> tuple[list, np.ndarray]:
    sift = cv2.SIFT_create(nfeatures=n)
    kp, des = sift.detectAndCompute(grey, None)
    des = np.sqrt(des / (des.sum(1, keepdims=True) + 1e-7)).astype(np.float32)
    return kp, des


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mosaic", type=Path)
    p.add_argument("photos", type=Path, nargs="+")
    p.add_argument("--mosaic-scale", type=float, required=True)
    p.add_argument("--photo-size", type=int, default=900)
    p.add_argument("--min-inliers", type=int, default=30)
    args = p.parse_args()
    cv2.setNumThreads(1)
    mosaic = cv2.imread(str(args.mosaic), cv2.IMREAD_GRAYSCALE)
    f = 1.0 / args.mosaic_scale
    mosaic = cv2.resize(mosaic, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    clahe = cv2.createCLAHE(2.0, (8, 8))
    kp_m, des_m = _root_sift(clahe.apply(mosaic), 60000)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    found = 0
    for path in args.photos:
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        s = args.photo_size / max(grey.shape)
        grey = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        kp, des = _root_sift(clahe.apply(grey), 6000)
        pairs = [m for m, n in matcher.knnMatch(des, des_m, k=2) if m.distance < 0.8 * n.distance]
        inliers, local_scale = 0, float("nan")
        if len(pairs) >= 8:
            src = np.float32([kp[m.queryIdx].pt for m in pairs])
            dst = np.float32([kp_m[m.trainIdx].pt for m in pairs])
            hom, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, 3.0)
            if hom is not None:
                inliers = int(mask.sum())
                centre = np.array([grey.shape[1] / 2, grey.shape[0] / 2])
                jac = hom[:2, :2] - np.outer(hom[:2] @ np.r_[centre, 1.0] / (hom[2] @ np.r_[centre, 1.0]), hom[2, :2])
                jac /= hom[2] @ np.r_[centre, 1.0]
                local_scale = float(np.sqrt(abs(np.linalg.det(jac))))
        ok = inliers >= args.min_inliers and 0.8 <= local_scale <= 1.25
        found += ok
        print(json.dumps({"image": path.stem, "matches": len(pairs), "inliers": inliers,
                          "local_scale": round(local_scale, 3), "found": ok}), flush=True)  # fmt: skip
    print(json.dumps({"found": found, "of": len(args.photos)}))


if __name__ == "__main__":
    main()
