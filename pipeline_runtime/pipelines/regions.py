"""Regions of interest in a frame, and cutting them out as square crops.

A box is (x, y, w, h) in frame pixels. `center` and `grid` depend only on the
frame size; `faces` runs the frontal-face Haar cascade that ships inside
opencv-python (`cv2.data.haarcascades`), so no model is downloaded.
"""

from __future__ import annotations

import os
from typing import Literal

import cv2
import numpy as np

Mode = Literal["center", "grid", "faces"]

FACE_CASCADE = "haarcascade_frontalface_default.xml"
"""Cascade file used by `faces` mode, from `cv2.data.haarcascades`."""


def center_box(width: int, height: int, crop_size: int) -> tuple[int, int, int, int]:
    """The centred square of side `crop_size`, or the largest centred square if the frame is smaller."""
    side = min(crop_size, width, height)
    return ((width - side) // 2, (height - side) // 2, side, side)


def grid_boxes(width: int, height: int, crop_size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping `crop_size` tiles covering the frame, the grid centred; row-major.

    A frame smaller than one tile gives its centre box.
    """
    cols, rows = width // crop_size, height // crop_size
    if cols == 0 or rows == 0:
        return [center_box(width, height, crop_size)]
    x0, y0 = (width - cols * crop_size) // 2, (height - rows * crop_size) // 2
    return [(x0 + c * crop_size, y0 + r * crop_size, crop_size, crop_size) for r in range(rows) for c in range(cols)]


def geometry_boxes(mode: Mode, width: int, height: int, crop_size: int) -> list[tuple[int, int, int, int]] | None:
    """Every frame's boxes when the frame size alone decides them (center, grid); None for faces."""
    if mode == "center":
        return [center_box(width, height, crop_size)]
    if mode == "grid":
        return grid_boxes(width, height, crop_size)
    return None


def faces_unavailable() -> str | None:
    """Why `faces` mode cannot run with the installed OpenCV, or None if it can.

    OpenCV 5 moved the Haar cascades (and `CascadeClassifier`) out of the
    opencv-python wheels; they are there in every 4.x release.
    """
    # getattr: OpenCV 5's type stubs no longer declare these names.
    if not hasattr(cv2, "CascadeClassifier"):
        return (
            f"faces mode needs OpenCV's Haar cascades, which OpenCV {cv2.__version__} does not ship "
            "(install opencv-python-headless<5, or use mode center or grid)"
        )
    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), FACE_CASCADE)
    if not os.path.isfile(path):
        return f"faces mode needs {FACE_CASCADE}, not found in cv2.data.haarcascades"
    return None


class FaceDetector:
    """Frontal faces with OpenCV's bundled Haar cascade; boxes are squared and padded.

    Detection runs on a grey copy scaled so its longer side is at most
    `detect_width` pixels (Haar cost grows with area; faces a crop is cut for are
    not tiny), then boxes are mapped back to full-frame coordinates.
    """

    def __init__(self, margin: float = 0.2, detect_width: int = 640, min_size: int = 24) -> None:
        reason = faces_unavailable()
        if reason:
            raise RuntimeError(reason)
        path = os.path.join(getattr(cv2, "data").haarcascades, FACE_CASCADE)  # noqa: B009 - cv2's stubs lack `data`
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}")
        self.margin = margin
        self.detect_width = detect_width
        self.min_size = min_size

    def detect(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes in `frame`, sorted top-to-bottom then left-to-right (deterministic order)."""
        height, width = frame.shape[:2]
        scale = min(1.0, self.detect_width / max(width, height))
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_size, self.min_size)
        )
        boxes = []
        for x, y, w, h in found if len(found) else []:
            side = int(round(max(w, h) / scale * (1 + 2 * self.margin)))  # noqa: RUF046 - numpy floats round to floats
            side = min(side, width, height)
            cx, cy = (x + w / 2) / scale, (y + h / 2) / scale
            bx = int(min(max(round(cx - side / 2), 0), width - side))
            by = int(min(max(round(cy - side / 2), 0), height - side))
            boxes.append((bx, by, side, side))
        return sorted(boxes, key=lambda b: (b[1], b[0], b[2]))


def cut(frame: np.ndarray, box: tuple[int, int, int, int] | np.ndarray, crop_size: int) -> np.ndarray:
    """The `crop_size`x`crop_size` crop of `box` (resized with INTER_AREA/INTER_LINEAR if the box differs)."""
    x, y, w, h = (int(v) for v in box)
    region = frame[y : y + h, x : x + w]
    if w == crop_size and h == crop_size:
        return region
    interp = cv2.INTER_AREA if w > crop_size else cv2.INTER_LINEAR
    return cv2.resize(region, (crop_size, crop_size), interpolation=interp)
