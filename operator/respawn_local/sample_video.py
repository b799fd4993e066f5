"""A small synthetic video (moving shapes over a drifting gradient) for the demo and tests."""

from __future__ import annotations

import os

import cv2
import numpy as np


def make_video(
    path: str | os.PathLike[str],
    frames: int = 120,
    width: int = 160,
    height: int = 120,
    fourcc: str = "mp4v",
    fps: float = 25.0,
) -> str:
    """Write a video of moving shapes over a drifting gradient; every frame differs."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {fourcc} to {path}")
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    base = np.empty((height, width, 3), np.uint8)
    try:
        for i in range(frames):
            base[..., 0] = ((ramp + 3 * i) % 256).astype(np.uint8)
            base[..., 1] = ((rows + 2 * i) % 256).astype(np.uint8)
            base[..., 2] = 64
            frame = base.copy()
            cx = int(width / 2 + width / 3 * np.sin(i / 9))
            cv2.circle(frame, (cx, height // 2), max(4, height // 6), (0, 0, 255), -1)
            x = (5 * i) % max(1, width - height // 4)
            cv2.rectangle(frame, (x, height // 8), (x + height // 4, height // 8 + height // 4), (255, 255, 255), -1)
            cv2.putText(frame, str(i), (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, height / 240, (0, 255, 0), 1)
            writer.write(frame)
    finally:
        writer.release()
    return str(path)


def main(argv: list[str] | None = None) -> None:
    """`python -m respawn_local.sample_video clip.mp4`: a clip to try the tour on."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m respawn_local.sample_video", description=main.__doc__)
    p.add_argument("path", help="where to write the video (.mp4 or .avi)")
    p.add_argument("--frames", type=int, default=250, help="frames at 25 fps (default 250: 10 s)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    args = p.parse_args(argv)
    fourcc = "MJPG" if args.path.endswith(".avi") else "mp4v"
    made = make_video(args.path, frames=args.frames, width=args.width, height=args.height, fourcc=fourcc)
    print(f"wrote {made}: {args.frames} frames, {args.width}x{args.height}, {os.path.getsize(made) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
