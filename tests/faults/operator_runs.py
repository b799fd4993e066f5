"""Judging runs the fault suite drove through the real operator: did each one finish
exactly once, with the clean output, one Job per attempt, and no committed step
run again? Shared by test_operator_faults.py and test_operator_disruptions.py.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.harness import fenced_writes, full_history, lost_in_history, reran_after_commit
from tests.operator.harness import NS, Cluster

OUTPUT = "a,b,c,d,e 11111\n"
"""What tests/operator/op_pipelines.py Steps writes when every step ran exactly once."""


def settle_and_judge(cluster: Cluster, names: list[str], timeout: float) -> tuple[dict[str, list[str]], int, int]:
    """Give every run until `timeout` to succeed, then judge each:
    (problems by run, lost, duplicates)."""
    end = time.monotonic() + timeout  # one deadline for all: a stuck run is judged, not timed out
    for name in names:
        try:
            cluster.wait_phase(name, "Succeeded", timeout=max(0.1, end - time.monotonic()))
        except AssertionError:
            pass  # judged below, with the reason
    by_run: dict[str, list[str]] = {}
    lost = dups = 0
    for name in names:
        by_run[name], lo, du = judge(cluster, name)
        lost += lo
        dups += du
    stuck = [n for n in names if cluster.status(n).get("phase") != "Succeeded"]
    if stuck:
        # CI keeps only a failed run's output: say there what the operator did meanwhile.
        by_run[stuck[0]].append(f"{stuck[0]}: the operator log ends with:\n{log_tail(cluster.op.log)}")
    return by_run, lost, dups


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def ckpt_uri(cluster: Cluster) -> str:
    return f"file://{cluster.tmp / 'checkpoints'}"


def judge(cluster: Cluster, name: str) -> tuple[list[str], int, int]:
    """(problems, lost, duplicates) of a run that should have Succeeded exactly once."""
    problems: list[str] = []
    st = cluster.status(name)
    if st.get("phase") != "Succeeded":
        return [f"{name}: phase {st.get('phase')}: {st.get('message')}; pods: {pods_seen(cluster, name)}"], 0, 0
    out = cluster.tmp / f"{name}.out"
    if not out.exists() or out.read_text() != OUTPUT:
        problems.append(f"{name}: output {out.read_text() if out.exists() else None!r}")
    attempts = st.get("attempts") or []
    n = st.get("attempt", 0)
    jobs = cluster.jobs(name)
    duplicates = 0
    # Deterministic names make a second Job for one attempt impossible; the operator may
    # delete an attempt's Job to stop it (a lost node), so older ones can be gone.
    expected = [f"{name}-a{i}" for i in range(1, n + 1)]
    numbers = [a.get("attempt") for a in attempts]
    if not set(jobs) <= set(expected) or f"{name}-a{n}" not in jobs or numbers != list(range(1, n + 1)):
        duplicates += len(set(jobs) - set(expected)) + len(numbers) - len(set(numbers))
        problems.append(f"{name}: jobs {jobs}, status.attempt {n}, attempts {numbers}")
    succeeded = [a for a in attempts if a.get("outcome") == "Succeeded"]
    if len(succeeded) != 1 or attempts[-1].get("outcome") != "Succeeded":
        duplicates += max(0, len(succeeded) - 1)
        problems.append(f"{name}: outcomes {[a.get('outcome') for a in attempts]}")
    if st.get("completedSteps") != 5 or st.get("totalSteps") != 5:
        problems.append(f"{name}: status lost steps: {st.get('completedSteps')}/{st.get('totalSteps')}")
    history = full_history(ckpt_uri(cluster), st["runId"], st.get("tenant") or "default")
    executions = [(s, a, 0) for s, a in cluster.executions(name)]
    lost, why_lost = lost_in_history(history)
    fenced, why_fenced = fenced_writes(history)
    reran, _, why_reran = reran_after_commit(executions, history)
    problems += [f"{name}: {p}" for p in why_lost + why_fenced + why_reran]
    return problems, lost, duplicates + fenced + reran


def pods_seen(cluster: Cluster, name: str) -> list[str]:
    """What the API says about the run's pods (for a run that did not converge)."""
    uid = cluster.run(name)["metadata"]["uid"]
    seen = []
    for pod in cluster.api.list("pods", NS, label_selector=f"respawn.dev/run-uid={uid}"):
        states = [c.get("state") for c in pod["status"].get("containerStatuses") or []]
        seen.append(f"{pod['metadata']['name']} {pod['status'].get('phase')} {states}")
    return seen
