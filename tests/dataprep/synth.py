"""Small synthetic videos for the dataprep tests and benchmark: moving shapes, any fourcc."""

from __future__ import annotations

import os

import cv2
import numpy as np
from respawn_local.sample_video import make_video

__all__ = ["draw_face", "make_face_video", "make_video"]


def draw_face(img: np.ndarray, cx: int, cy: int, r: int) -> None:
    """A cartoon face (skin disc, eyes, brows, nose, mouth) that OpenCV's frontal Haar cascade detects."""
    cv2.circle(img, (cx, cy), r, (180, 200, 230), -1)
    for dx in (-r // 2.6, r // 2.6):
        cv2.ellipse(img, (int(cx + dx), int(cy - r // 4)), (r // 5, r // 9), 0, 0, 360, (40, 40, 40), -1)
        cv2.line(
            img,
            (int(cx + dx - r // 5), int(cy - r // 2.3)),
            (int(cx + dx + r // 5), int(cy - r // 2.3)),
            (30, 30, 30),
            max(1, r // 12),
        )
    cv2.line(img, (cx, cy - r // 8), (cx, cy + r // 5), (120, 140, 170), max(1, r // 12))
    cv2.ellipse(img, (cx, cy + r // 2), (r // 3, r // 9), 0, 0, 360, (60, 60, 140), -1)


def make_face_video(
    path: str | os.PathLike[str], frames: int = 30, width: int = 320, height: int = 240, fourcc: str = "MJPG"
) -> str:
    """A face drifting across a plain background, every frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 25.0, (width, height))
    try:
        for i in range(frames):
            frame = np.full((height, width, 3), 90, np.uint8)
            draw_face(frame, width // 2 - 40 + 3 * i, height // 2, 60)
            writer.write(frame)
    finally:
        writer.release()
    return str(path)
