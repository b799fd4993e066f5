"""A resumed step must see the same context a clean run's step sees, down to dict order."""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.results import Results
from tests.runtime.conftest import Runtime

ORDERED = "tests.faults.pipelines:Ordered"


def test_resumed_context_keeps_dict_order(results: Results, tmp_path: Path) -> None:
    rt, out = Runtime(tmp_path), tmp_path / "out.txt"
    args = [
        "run",
        ORDERED,
        "--run-id",
        "o1",
        "--checkpoint-uri",
        f"file://{tmp_path}/ck",
        "--retain",
        "Always",
        "--params",
        json.dumps({"out": str(out)}),
    ]
    code, text, _ = rt.run([*args, "--attempt", "1"])
    assert code == 0, text
    clean = out.read_text()
    # A re-run of the last step loads the context from the commit, as any resume does.
    code, text, _ = rt.run([*args, "--attempt", "2", "--rerun-from", "write"])
    assert code == 0, text
    resumed = out.read_text()
    results.record(
        "Resume sees the clean run's context (dict order)",
        runs=1,
        faults=1,
        correct=int(resumed == clean),
        test="test_resumed_context_keeps_dict_order",
        details=[] if resumed == clean else [f"clean {clean!r} resumed {resumed!r}"],
    )
    assert clean == "zeta,alpha,mid;zeta,alpha\n"
    assert resumed == clean
