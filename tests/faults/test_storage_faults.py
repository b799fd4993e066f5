"""Storage faults: fake-gcs-server behind a fault-injecting proxy (tests/faults/proxy.py).

The runtime must retry what is safe (throttling, 5xx, dropped connections, a lost
answer to a create-only commit whose write landed), exit 75 when storage stays
down, and resume byte-identical once storage is back.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from respawn_local.testkit import wait_for

from tests.conftest import GCSEmulator
from tests.faults.harness import FAULT_ENV, Verdict, reference, run_args, verify
from tests.faults.proxy import ANY, ARTIFACTS, COMMITS, FaultProxy, started
from tests.faults.results import Results, runs_from_env
from tests.runtime.conftest import Runtime, termination

pytestmark = pytest.mark.slow  # storage faults through a proxy, real processes (size: RESPAWN_FAULT_STORAGE_RUNS)

SEED = runs_from_env("RESPAWN_FAULT_SEED", 20261130)
BURSTS = runs_from_env("RESPAWN_FAULT_STORAGE_RUNS", 6)
RETRY_SECONDS = "3"


@pytest.fixture
def proxy(gcs_emulator: GCSEmulator) -> Iterator[FaultProxy]:
    found = started(gcs_emulator.url)
    yield found
    found.up()
    found.stop()


@pytest.fixture
def bucket(gcs_emulator: GCSEmulator, tmp_path: Path) -> str:
    return gcs_emulator.make_bucket("storage-" + tmp_path.name[-20:].lower().replace("_", "-").strip("-"))


def through(proxy: FaultProxy, **extra: str) -> dict[str, str]:
    return {**FAULT_ENV, "STORAGE_EMULATOR_HOST": proxy.url, "RESPAWN_STORAGE_RETRY_SECONDS": RETRY_SECONDS, **extra}


def one_clean_attempt(tmp: Path, uri: str, proxy: FaultProxy, run_id: str) -> Verdict:
    ref = reference("sweep", tmp.parent / "reference-sweep")
    tmp.mkdir(exist_ok=True)
    rt, out = Runtime(tmp), tmp / "out.txt"
    code, text, term = rt.run(run_args("sweep", uri, out, 1, run_id=run_id), env=through(proxy))
    verdict = verify(rt, uri, run_id, "sweep", out, last_code=code, ref=ref)
    if code != 0:
        verdict.problems.append(f"exit {code}: {term and term['message']}")
    return verdict


FAULT_KINDS: list[tuple[str, Any]] = [
    ("429 on any request", lambda p, r: p.fail_next(r.randint(1, 2), 429, ANY, r.randint(0, 30))),
    ("503 on any request", lambda p, r: p.fail_next(r.randint(1, 2), 503, ANY, r.randint(0, 30))),
    ("500 on commit creates", lambda p, r: p.fail_next(1, 500, COMMITS, r.randint(0, 8))),
    ("503 on artifact uploads", lambda p, r: p.fail_next(2, 503, ARTIFACTS, r.randint(0, 4))),
    ("connection dropped mid-upload", lambda p, r: p.drop_next(r.randint(1, 2), match=ARTIFACTS, skip=r.randint(0, 4))),
    ("answer to a landed commit lost", lambda p, r: p.drop_next(1, after=True, match=COMMITS, skip=r.randint(0, 8))),
]


@pytest.mark.timeout(240)
def test_transient_storage_errors_are_retried_in_the_same_attempt(
    results: Results, tmp_path: Path, gcs_emulator: GCSEmulator
) -> None:
    """Each run meets a seeded burst of one fault kind and must finish in ONE attempt."""
    bucket = gcs_emulator.make_bucket("storage-bursts")
    runs = max(BURSTS, len(FAULT_KINDS))

    def one(i: int) -> tuple[str, Verdict, int]:
        rng = random.Random(f"{SEED}-storage-{i}")
        name, inject = FAULT_KINDS[i % len(FAULT_KINDS)]
        proxy = started(gcs_emulator.url)  # one proxy per run: faults don't cross runs
        try:
            inject(proxy, rng)
            run_tmp = tmp_path / f"run{i}"
            run_tmp.mkdir()
            verdict = one_clean_attempt(run_tmp, f"gs://{bucket}/b{i}", proxy, f"s{i}")
            if proxy.injected == 0:
                verdict.problems.append("no fault was injected (the burst came too late)")
                verdict.correct = False
            return name, verdict, proxy.injected
        finally:
            proxy.stop()

    with ThreadPoolExecutor(3) as pool:  # mostly waiting out retry back-off
        outcomes = list(pool.map(one, range(runs)))
    problems = [f"{name}: {'; '.join(v.problems)}" for name, v, _ in outcomes if v.problems]
    results.record(
        "Storage: 429/5xx, dropped uploads, lost commit answers (gs://)",
        runs=runs,
        faults=sum(n for _, _, n in outcomes),
        correct=sum(not v.problems for _, v, _ in outcomes),
        lost=sum(v.lost for _, v, _ in outcomes),
        duplicates=sum(v.duplicates for _, v, _ in outcomes),
        test="test_transient_storage_errors_are_retried_in_the_same_attempt",
        details=problems,
    )
    assert not problems, "\n".join(problems)


def test_slow_storage_finishes_identical(results: Results, tmp_path: Path, proxy: FaultProxy, bucket: str) -> None:
    proxy.latency(0.05)
    verdict = one_clean_attempt(tmp_path / "run", f"gs://{bucket}/slow", proxy, "slow")
    results.record(
        "Storage: 50 ms latency on every request (gs://)",
        runs=1,
        faults=proxy.requests,
        correct=int(not verdict.problems),
        lost=verdict.lost,
        duplicates=verdict.duplicates,
        test="test_slow_storage_finishes_identical",
        details=verdict.problems,
    )
    assert not verdict.problems


@pytest.mark.parametrize("how", ["503", "refuse"])
def test_storage_down_exits_75_then_resumes_identical(
    results: Results, tmp_path: Path, proxy: FaultProxy, bucket: str, how: str
) -> None:
    ref = reference("sweep", tmp_path / "reference-sweep")
    uri, run_id = f"gs://{bucket}/down", "down"
    run_tmp = tmp_path / "run"
    run_tmp.mkdir()
    rt, out = Runtime(run_tmp), run_tmp / "out.txt"
    proc = rt.start(run_args("sweep", uri, out, 1, run_id=run_id), env=through(proxy))
    # Storage goes away once the run is inside its long step (commits 1-3 landed).
    wait_for(
        lambda: any(s == "scan" for s, _, _ in rt.executions()) or proc.poll() is not None,
        60,
        "the run to reach step scan",
    )
    proxy.down(how)
    went_down = time.monotonic()
    first = proc.wait(90)
    gave_up_after = time.monotonic() - went_down
    term = termination(proc)
    proxy.up()
    code, text, _ = rt.run(run_args("sweep", uri, out, 2, run_id=run_id), env=through(proxy))
    verdict = verify(rt, uri, run_id, "sweep", out, last_code=code, ref=ref)
    problems = list(verdict.problems)
    if first != 75 or term is None or term["reason"] != "TransientInfra":
        problems.append(f"storage down ({how}): exit {first}, {term}")
    if gave_up_after > 30:
        problems.append(f"gave up only after {gave_up_after:.0f}s")
    results.record(
        "Storage down (503 / refused) -> exit 75 -> resume (gs://)",
        runs=1,
        faults=1,
        correct=int(not problems),
        lost=verdict.lost,
        duplicates=verdict.duplicates,
        test=f"test_storage_down_exits_75_then_resumes_identical[{how}]",
        details=problems,
    )
    assert not problems, "\n".join(problems)


def test_hung_storage_gives_up_within_the_retry_budget(
    results: Results, tmp_path: Path, proxy: FaultProxy, bucket: str
) -> None:
    run_tmp = tmp_path / "run"
    run_tmp.mkdir()
    rt, out = Runtime(run_tmp), run_tmp / "out.txt"
    proc = rt.start(run_args("sweep", f"gs://{bucket}/hung", out, 1, run_id="hung"), env=through(proxy))
    wait_for(
        lambda: any(s == "scan" for s, _, _ in rt.executions()) or proc.poll() is not None,
        60,
        "the run to reach step scan",
    )
    proxy.down("hang")
    # Budget: RESPAWN_STORAGE_RETRY_SECONDS (3) plus one generous request timeout.
    try:
        code: int | None = proc.wait(12)
    except Exception:
        code = None
        proc.kill()
        proc.wait(10)
    finally:
        proxy.up()
    ok = code == 75
    results.record(
        "Storage hangs (accepts, never answers) -> exit 75 in budget (gs://)",
        runs=1,
        faults=1,
        correct=int(ok),
        test="test_hung_storage_gives_up_within_the_retry_budget",
        details=[] if ok else [f"still running 12 s after storage hung (exit {code})"],
    )
    assert ok


@pytest.mark.parametrize("fault", ["latency", "503", "hang"])
def test_sigterm_while_storage_struggles_exits_by_the_deadline_then_resumes(
    results: Results, tmp_path: Path, proxy: FaultProxy, bucket: str, fault: str
) -> None:
    """A spot VM's notice does not wait for storage: SIGTERM while every request is slow,
    refused with 503 or never answered must still end the pod within --term-deadline
    (143, or 75 when storage gave up first), and the next attempt resumes identical."""
    ref = reference("sweep", tmp_path / "reference-sweep")
    uri, run_id, deadline = f"gs://{bucket}/term", "term", 3.0
    run_tmp = tmp_path / "run"
    run_tmp.mkdir()
    rt, out = Runtime(run_tmp), run_tmp / "out.txt"
    args = run_args("sweep", uri, out, 1, run_id=run_id)
    proc = rt.start([*args, "--term-deadline", str(deadline)], env=through(proxy))
    wait_for(
        lambda: any(s == "scan" for s, _, _ in rt.executions()) or proc.poll() is not None,
        60,
        "the run to reach step scan",
    )
    if fault == "latency":
        proxy.latency(1.0)
    else:
        proxy.down(fault)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    first = proc.wait(60)
    took = time.monotonic() - sent
    term = termination(proc)
    proxy.latency(0)
    proxy.up()
    code, _, _ = rt.run(run_args("sweep", uri, out, 2, run_id=run_id), env=through(proxy))
    verdict = verify(rt, uri, run_id, "sweep", out, last_code=code, ref=ref)
    problems = list(verdict.problems)
    if first not in (143, 75) or term is None:
        problems.append(f"SIGTERM with storage {fault}: exit {first}, {term}")
    if took > deadline + 2:
        problems.append(f"SIGTERM with storage {fault}: took {took:.1f}s, deadline {deadline}s")
    results.record(
        "SIGTERM while storage is slow / 503 / hung -> exit by deadline -> resume (gs://)",
        runs=1,
        faults=2,
        correct=int(not problems),
        lost=verdict.lost,
        duplicates=verdict.duplicates,
        test=f"test_sigterm_while_storage_struggles_exits_by_the_deadline_then_resumes[{fault}]",
        details=problems,
    )
    assert not problems, "\n".join(problems)
