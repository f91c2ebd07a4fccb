"""Is this the same moment? Local-feature matching for copies, edits and bursts of one photo.

Global vectors cannot tell an edited copy (cropped, shrunk, recompressed, brightened) from a
different photo of a similar scene: the bundled model gives the edited copy a cosine of 0.53 to
0.70 with its original, and two different eval photos reach 0.73. Matching local features can:
ORB keypoints, Lowe's ratio test, then a RANSAC homography. Measured on 80 eval photos (see
bench/bench_similar.py): an edited copy keeps 43 or more geometrically consistent matches (one
in 80 kept 6), a burst neighbour shifted by 4 or 10 % of the width 132 or more, while a photo and
each of its 3 visually nearest different photos never share more than 7.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MIN_INLIERS = 15
_SIDE = 320  # long side the keypoints are found at: about 5 ms a photo
_RATIO = 0.75
_RANSAC_PIXELS = 5.0
_MIN_MATCHES = 8  # a homography needs 4; fewer than 8 good matches is no evidence


@dataclass(frozen=True)
class Keypoints:
    """ORB keypoint positions and their binary descriptors (None when none were found)."""

    points: Any
    descriptors: Any


@functools.cache
def _opencv() -> Any:
    """OpenCV, or None where it cannot load (a slim container without libGL): copies of the
    query are then only found by perceptual hash and vector, as other near-duplicates are."""
    try:
        import cv2
    except ImportError as error:
        log.warning("OpenCV unavailable (%s): edited copies are not matched by keypoints", error)
        return None
    return cv2


def keypoints(image: Image.Image) -> Keypoints:
    """ORB keypoints of the image scaled to a long side of 320 pixels, in grey (none without
    OpenCV)."""
    cv2 = _opencv()
    if cv2 is None:
        return Keypoints([], None)
    grey = np.asarray(image.convert("L"))
    scale = _SIDE / max(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    found, descriptors = cv2.ORB.create(nfeatures=500).detectAndCompute(small, None)
    return Keypoints([p.pt for p in found], descriptors)


def consistent_matches(first: Keypoints, second: Keypoints) -> int:
    """How many keypoint matches one homography explains (0 when there is nothing to match)."""
    cv2 = _opencv()
    if cv2 is None or first.descriptors is None or second.descriptors is None:
        return 0
    if min(len(first.points), len(second.points)) < _MIN_MATCHES:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(first.descriptors, second.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]
    if len(good) < _MIN_MATCHES:
        return len(good)
    source = np.array([first.points[m.queryIdx] for m in good], dtype=np.float32)
    target = np.array([second.points[m.trainIdx] for m in good], dtype=np.float32)
    _, mask = cv2.findHomography(source, target, cv2.RANSAC, _RANSAC_PIXELS)
    return 0 if mask is None else int(mask.sum())


def same_moment(first: Keypoints, second: Keypoints) -> bool:
    """True for copies, edited copies and burst neighbours of one photo."""
    return consistent_matches(first, second) >= MIN_INLIERS
