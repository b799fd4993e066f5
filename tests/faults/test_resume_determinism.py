"""A resumed step must see the same context a clean run's step sees, down to dict order."""

from __future__ import annotations

from pathlib import Path


from tests.faults.results import Results
from tests.runtime.conftest import Runtime

ORDERED = "tests.faults.pipelines:Ordered"


def test_resumed_context_keeps_dict_order(results: Results, tmp_path: Path) -> None:
    rt = Runtime(tmp_path)
    uri, clean, resumed = f"file://{tmp_path}/ck", tmp_path / "clean.txt", tmp_path / "res.txt"
    args = ["run", ORDERED, "--run-id", "o1", "--checkpoint-uri", uri, "--retain", "Always"]
    code, text, _ = rt.run([*args, "--params", f'{{"out": "{clean}"}}', "--attempt", "1"])
    assert code == 0, text
    # A rerun of the last step loads the context from the commit, as any resume does.
    code, text, _ = rt.run([*args, "--params", f'{{"out": "{clean}"}}', "--attempt", "2",
                            "--rerun-from", "write"])
    assert code == 0, text
    resumed.write_bytes(clean.read_bytes())
    rt2 = Runtime(tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    code, text, _ = rt2.run(["run", ORDERED, "--run-id", "o2", "--checkpoint-uri",
                             f"file://{tmp_path}/ck2", "--params", f'{{"out": "{clean}"}}'])
    assert code == 0, text
    same = clean.read_bytes() == resumed.read_bytes()
    results.record("Resume sees the clean run's context (dict order)", runs=1, faults=1,
                   correct=int(same), test="test_resumed_context_keeps_dict_order",
                   details=[] if same else [f"clean {clean.read_text()!r} resumed "
                                           f"{resumed.read_text()!r}"])
    assert clean.read_text() == "zeta,alpha,mid;zeta,alpha\n"
    assert resumed.read_bytes() == clean.read_bytes()
