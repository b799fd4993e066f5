"""Random kills: SIGKILL or SIGTERM a real `pipeline-runtime` at seeded random moments,
resume with increasing attempts (and kill the resumed attempt again) until it exits 0.

Every run must end byte-identical to a clean run, lose no committed step or progress,
and never run again a step whose commit had landed (harness.verify).

Size: $RESPAWN_FAULT_RUNS runs per store (default 16 on file://, 8 on gs://;
$RESPAWN_FAULT_RUNS_GS overrides gs://). The full sweep of the issue is
`RESPAWN_FAULT_RUNS=200 pytest -m slow tests/faults`.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline_runtime.chaos.interrupt import finish, interrupt
from tests.conftest import GCSEmulator
from tests.faults.harness import FAULT_ENV, PIPELINES, Verdict, reference, run_args, verify
from tests.faults.proxy import ANY, ARTIFACTS, COMMITS, FaultProxy, started
from tests.faults.results import Results, runs_from_env
from tests.runtime.conftest import Runtime

pytestmark = pytest.mark.slow  # random-kill sweeps (size: RESPAWN_FAULT_RUNS*)

SEED = runs_from_env("RESPAWN_FAULT_SEED", 20261130)
FILE_RUNS = runs_from_env("RESPAWN_FAULT_RUNS", 16)
GS_RUNS = runs_from_env("RESPAWN_FAULT_RUNS_GS", runs_from_env("RESPAWN_FAULT_RUNS", 8))
CHAOS_RUNS = runs_from_env("RESPAWN_FAULT_RUNS_CHAOS", 4)
PARALLEL = runs_from_env("RESPAWN_FAULT_PARALLEL", 2)
MAX_ATTEMPTS = 8

EXPECTED = {
    signal.SIGKILL: {0, -signal.SIGKILL},
    # -15: the stop landed while the interpreter was still starting, before the
    # handler exists (Kubernetes reports that as 143 too); 0: it had just finished.
    signal.SIGTERM: {0, 143, -signal.SIGTERM},
}


def storage_chaos(proxy: FaultProxy, rng: random.Random) -> str:
    """Arm one seeded storage fault for the coming attempt; say which."""
    kind = rng.choice(["503", "429", "drop-upload", "lost-answer", "none"])
    skip = rng.randint(0, 12)
    if kind in ("503", "429"):
        proxy.fail_next(rng.randint(1, 2), int(kind), ANY, skip)
    elif kind == "drop-upload":
        proxy.drop_next(1, match=ARTIFACTS, skip=rng.randint(0, 3))
    elif kind == "lost-answer":
        proxy.drop_next(1, after=True, match=COMMITS, skip=rng.randint(0, 6))
    return kind


def kill_and_resume(
    index: int, seed: int, tmp: Path, uri: str, proxy: FaultProxy | None = None
) -> tuple[Verdict, int, str]:
    """One run: (verdict, faults, what happened). With `proxy`, storage faults too."""
    rng = random.Random(f"{seed}-{index}")
    pipeline = rng.choice(sorted(PIPELINES))
    ref = reference(pipeline, tmp.parent / f"reference-{pipeline}")
    rt, out, run_id = Runtime(tmp), tmp / "out.txt", f"k{index}"
    planned = rng.choice([1, 1, 2, 3])
    kills, attempt, story = 0, 1, [pipeline]
    env = dict(FAULT_ENV)
    if proxy is not None:
        env.update(STORAGE_EMULATOR_HOST=proxy.url, RESPAWN_STORAGE_RETRY_SECONDS="5")
    while True:
        if proxy is not None:
            story.append(f"a{attempt}:storage-{storage_chaos(proxy, rng)}")
        proc = rt.start(run_args(pipeline, uri, out, attempt, run_id=run_id), env=env)
        if kills < planned:
            # The kill moment is the input under test: anywhere in a clean run's time.
            delay = rng.uniform(0.0, 1.05) * ref.seconds
            sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
            code, sent = interrupt(proc, delay, sig, timeout=120)
            if sent:
                kills += 1
                story.append(f"a{attempt}:{sig.name}@{delay:.2f}s->{code}")
                if code not in EXPECTED[sig] | ({75} if proxy else set()):
                    return (
                        Verdict(False, problems=[f"attempt {attempt} answered {sig.name} with exit {code}"]),
                        kills,
                        " ".join(story),
                    )
        else:
            code = finish(proc, 120)
            story.append(f"a{attempt}->{code}")
        if code == 0 or attempt >= MAX_ATTEMPTS:
            break
        attempt += 1
    verdict = verify(rt, uri, run_id, pipeline, out, last_code=code)
    return verdict, kills + (proxy.injected if proxy else 0), " ".join(story)


def sweep(
    results: Results,
    scenario: str,
    runs: int,
    tmp: Path,
    uri_for: Callable[[int, Path], str],
    test: str,
    upstream: str | None = None,
) -> None:
    def one(i: int) -> tuple[Verdict, int, str]:
        run_tmp = tmp / f"run{i}"
        run_tmp.mkdir()
        proxy = started(upstream) if upstream else None  # one per run: faults stay apart
        try:
            return kill_and_resume(
                i,
                SEED,
                run_tmp,
                uri_for(i, run_tmp),
                proxy,
            )
        finally:
            if proxy is not None:
                proxy.stop()

    for name in sorted(PIPELINES):  # the references first, one at a time
        reference(name, tmp / f"reference-{name}")
    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(one, range(runs)))
    failed = [
        f"run {i} ({story}): {'; '.join(v.problems)}" for i, (v, _, story) in enumerate(outcomes) if not v.correct
    ]
    results.record(
        scenario,
        runs=runs,
        faults=sum(k for _, k, _ in outcomes),
        correct=sum(v.correct for v, _, _ in outcomes),
        lost=sum(v.lost for v, _, _ in outcomes),
        duplicates=sum(v.duplicates for v, _, _ in outcomes),
        test=test,
        details=failed,
    )
    assert not failed, "\n".join(failed)


@pytest.mark.timeout(120 + 8 * FILE_RUNS)
def test_random_kills_resume_byte_identical_file(results: Results, tmp_path: Path) -> None:
    sweep(
        results,
        "Random SIGKILL/SIGTERM + resume (file://)",
        FILE_RUNS,
        tmp_path,
        lambda i, run_tmp: f"file://{run_tmp}/ck",
        "test_random_kills_resume_byte_identical_file",
    )


@pytest.mark.timeout(120 + 10 * GS_RUNS)
def test_random_kills_resume_byte_identical_gcs(results: Results, tmp_path: Path, gcs_emulator: GCSEmulator) -> None:
    bucket = gcs_emulator.make_bucket("random-kills")
    sweep(
        results,
        "Random SIGKILL/SIGTERM + resume (gs://)",
        GS_RUNS,
        tmp_path,
        lambda i, run_tmp: f"gs://{bucket}/sweep{i}",
        "test_random_kills_resume_byte_identical_gcs",
    )


@pytest.mark.timeout(120 + 12 * CHAOS_RUNS)
def test_random_kills_with_storage_faults_resume_byte_identical_gcs(
    results: Results, tmp_path: Path, gcs_emulator: GCSEmulator
) -> None:
    """Kills and, before every attempt, one seeded storage fault (a 503/429 burst, a dropped
    upload, the answer to a landed commit lost) through tests/faults/proxy.py."""
    bucket = gcs_emulator.make_bucket("random-kills-chaos")
    sweep(
        results,
        "Random kills + storage faults + resume (gs://)",
        CHAOS_RUNS,
        tmp_path,
        lambda i, run_tmp: f"gs://{bucket}/chaos{i}",
        "test_random_kills_with_storage_faults_resume_byte_identical_gcs",
        upstream=gcs_emulator.url,
    )
