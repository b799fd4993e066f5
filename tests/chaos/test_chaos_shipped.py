"""What Respawn ships passes its own chaos tool: dataprep in every mode, the custom example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_runtime.pipelines.regions import faces_unavailable
from tests.chaos.test_chaos import ROOT, chaos
from tests.dataprep.synth import make_face_video, make_video


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["center", "grid", "faces"])
def test_dataprep_is_resumable_in_every_mode(tmp_path: Path, mode: str) -> None:
    unavailable = faces_unavailable() if mode == "faces" else None
    if unavailable:
        pytest.skip(unavailable)
    maker = make_face_video if mode == "faces" else make_video
    maker(tmp_path / "clip.mp4", frames=48, width=320, height=240)
    params = {"video_uri": "clip.mp4", "output_uri": "out", "mode": mode, "crop_size": 64}
    code, report, err = chaos(
        tmp_path, "dataprep", "--params", json.dumps(params), "--compare-dir", "out", "--kills", "4", "--seed", "7"
    )
    assert report is not None, err
    assert code == 0 and report["ok"], json.dumps(report, indent=1)[:4000]
    assert sum(1 for c in report["cases"] for a in c["attempts"] if a["resumed_from"]) >= 1


def test_the_custom_pipeline_example_is_resumable(tmp_path: Path) -> None:
    (tmp_path / "custom_pipeline.py").write_text((ROOT / "examples" / "custom_pipeline.py").read_text())
    (tmp_path / "out").mkdir()
    code, report, err = chaos(
        tmp_path,
        "custom_pipeline:Thumbnails",
        "--params",
        json.dumps({"n": 4000, "out": "out/thumbs.npz"}),
        "--compare-dir",
        "out",
        "--kills",
        "4",
        "--seed",
        "7",
    )
    assert report is not None, err
    assert code == 0 and report["ok"], json.dumps(report, indent=1)[:4000]
