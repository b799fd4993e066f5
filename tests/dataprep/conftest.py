"""Fixtures for the dataprep tests: small synthetic videos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dataprep.synth import make_video


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def video(video_dir: Path) -> Callable[..., str]:
    """video(frames=120, width=160, height=120, fourcc="mp4v") -> path, cached per session."""
    made: dict[tuple[int, int, int, str], str] = {}

    def get(frames: int = 120, width: int = 160, height: int = 120, fourcc: str = "mp4v") -> str:
        key = (frames, width, height, fourcc)
        if key not in made:
            ext = "mp4" if fourcc == "mp4v" else "avi"
            made[key] = make_video(
                video_dir / f"v{frames}-{width}x{height}-{fourcc}.{ext}", frames, width, height, fourcc
            )
        return made[key]

    return get
