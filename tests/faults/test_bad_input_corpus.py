"""Bad input for the runtime: corrupt, truncated, foreign and version-mismatched commits,
missing or damaged artifacts, hostile ids, params and configuration.

Each case must end with the documented exit code (64: invalid input or configuration,
65: unusable checkpoint), a message naming the problem, no traceback, the same answer
when asked again (no crash loop), and the store byte-identical before and after: in
particular another tenant's run ("victim") is never touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline_runtime.commit import CHECKPOINT_VERSION, seal_record
from pipeline_runtime.storage import Store, open_store
from tests.conftest import GCSEmulator
from tests.faults.pipelines import CHAIN
from tests.faults.results import Results
from tests.runtime.conftest import Runtime

pytestmark = pytest.mark.slow  # a corpus of bad checkpoints, each one run through real processes

PARAMS = '{"mb": 0, "work_s": 0}'  # empty arrays and a 10 KB blob: small and quick'
TENANT = "t1"


def snapshot(store: Store, run: str) -> dict[str, str]:
    """Every object but those of the other cases' runs (they change in parallel)."""

    def mine(path: str) -> bool:
        return not path.startswith(f"{TENANT}/c") or path.startswith(f"{TENANT}/{run}/")

    lister = getattr(store, "fingerprints", None)
    if lister is not None:
        return {p: v for p, v in lister().items() if mine(p)}
    return {p: hashlib.sha256(store.get(p)).hexdigest() for p in store.list("") if mine(p)}


def commits(store: Store, run: str) -> list[str]:
    return [p for p in store.list(f"{TENANT}/{run}/commits/") if p.endswith(".json")]


def latest(store: Store, run: str) -> str:
    return commits(store, run)[-1]


def edit_latest(change: Callable[[dict[str, Any]], Any], reseal: bool = True) -> Callable[[Store, str], None]:
    """Change the newest commit. `reseal`: with a matching digest, as a buggy writer would
    leave it (the field checks must catch it); else as an edit after the fact (the digest must)."""

    def apply(store: Store, run: str) -> None:
        path = latest(store, run)
        body = json.loads(store.get(path))
        replaced = change(body)
        body = body if replaced is None else replaced
        store.put(path, seal_record(body) if reseal and isinstance(body, dict) else json.dumps(body).encode())

    return apply


def edited(change: Callable[[dict[str, Any]], Any]) -> Callable[[Store, str], None]:
    return edit_latest(change, reseal=False)


def first_json(body: dict[str, Any]) -> dict[str, Any]:
    for node in body["context"]["dict"].values():
        if "json" in node:
            return node  # type: ignore[no-any-return]
    raise AssertionError("no inline value in the commit")


def stub_latest(store: Store, run: str) -> None:
    """What an interrupted purge leaves: the newest commit is a stub."""
    path = latest(store, run)
    seq = int(path.rsplit("/", 1)[-1][:-5])
    store.put(
        path, seal_record({"seq": seq, "kind": "stub", "checkpoint_version": CHECKPOINT_VERSION, "tombstone": seq + 1})
    )


def raw_latest(data: Callable[[bytes], bytes]) -> Callable[[Store, str], None]:
    def apply(store: Store, run: str) -> None:
        path = latest(store, run)
        store.put(path, data(store.get(path)))

    return apply


def biggest_artifact(change: Callable[[bytes], bytes | None]) -> Callable[[Store, str], None]:
    def apply(store: Store, run: str) -> None:
        paths = store.list(f"{TENANT}/{run}/artifacts/")
        path = max(paths, key=lambda p: len(store.get(p)))
        new = change(store.get(path))
        if new is None:
            store.delete(path)
        else:
            store.put(path, new)

    return apply


def first_ref(body: dict[str, Any]) -> dict[str, Any]:
    for node in body["context"]["dict"].values():
        if "ref" in node:
            return node["ref"]  # type: ignore[no-any-return]
    raise AssertionError("no artifact reference in the commit")


def set_key(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda b: b.__setitem__(key, value)


def drop_key(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda b: b.pop(key) and None


def foreign_commit(store: Store, run: str) -> None:
    # Someone else's commit (the victim's final one) copied into this run's next slot.
    victim = store.get(latest_of(store, "victim", "v1"))
    seq = int(latest(store, run).rsplit("/", 1)[-1][:-5]) + 1
    store.put(f"{TENANT}/{run}/commits/{seq:08d}.json", victim)


def latest_of(store: Store, tenant: str, run: str) -> str:
    return [p for p in store.list(f"{tenant}/{run}/commits/")][-1]


@dataclass
class Case:
    name: str
    expect: int
    says: str
    """A part of the termination message that names the problem."""
    corrupt: Callable[[Store, str], None] | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    params: str = PARAMS


def traversal_ref(body: dict[str, Any]) -> None:
    first_ref(body)["sha256"] = "../../../victim/v1/commits/00000001"


CHECKPOINT_CASES = [
    Case("truncated commit", 65, "not valid JSON", raw_latest(lambda b: b[:40])),
    Case("empty commit", 65, "not valid JSON", raw_latest(lambda b: b"")),
    Case("binary garbage commit", 65, "not valid JSON", raw_latest(lambda b: bytes(range(256)))),
    Case("commit is a JSON list", 65, "not a commit object", raw_latest(lambda b: b"[1, 2]")),
    Case("seed-format version 1.0", 65, "checkpoint_version '1.0'", edit_latest(set_key("checkpoint_version", "1.0"))),
    Case("future version 9.9", 65, "checkpoint_version '9.9'", edit_latest(set_key("checkpoint_version", "9.9"))),
    Case("commit without context", 65, "lacks context", edit_latest(drop_key("context"))),
    Case("commit without completed_steps", 65, "lacks completed_steps", edit_latest(drop_key("completed_steps"))),
    Case("foreign pipeline name", 65, "belongs to pipeline 'other'", edit_latest(set_key("pipeline_name", "other"))),
    Case("foreign run id", 65, "belongs to pipeline", edit_latest(set_key("run_guid", "zzz"))),
    Case("another tenant's commit in the log", 65, "belongs to pipeline", foreign_commit),
    Case("attempt is a string", 65, "attempt", edit_latest(set_key("attempt", "seven"))),
    Case("completed_steps is a string", 65, "completed_steps", edit_latest(set_key("completed_steps", "abc"))),
    Case(
        "context node of unknown shape",
        65,
        "damaged",
        edit_latest(lambda b: b["context"]["dict"].__setitem__("x1", {"weird": 1})),
    ),
    Case("artifact ref with path traversal", 65, "damaged", edit_latest(traversal_ref)),
    Case("artifact ref with wrong size", 65, "damaged", edit_latest(lambda b: first_ref(b).__setitem__("size", 3))),
    Case("artifact missing", 65, "damaged", biggest_artifact(lambda b: None)),
    Case("artifact bytes flipped", 65, "damaged", biggest_artifact(lambda b: bytes([b[0] ^ 1]) + b[1:])),
    Case("artifact truncated", 65, "damaged", biggest_artifact(lambda b: b[: len(b) // 2])),
    # Edited after it was written: the commit's digest no longer matches.
    Case(
        "inline value edited",
        65,
        "does not match its digest",
        edited(lambda b: first_json(b).__setitem__("json", "edited")),
    ),
    Case(
        "completed_steps edited", 65, "does not match its digest", edited(lambda b: b["completed_steps"].pop() and None)
    ),
    Case("dtype edited", 65, "does not match its digest", edited(lambda b: first_ref(b).__setitem__("dtype", "<f8"))),
    Case("shape edited", 65, "does not match its digest", edited(lambda b: first_ref(b).__setitem__("shape", [1]))),
    Case("digest removed", 65, "does not match its digest", raw_latest(lambda b: b[: b.rindex(b',"digest"')] + b"}")),
    Case(
        "another tenant's name in the commit", 65, "belongs to tenant 'other'", edit_latest(set_key("tenant", "other"))
    ),
    # Damage that used to crash every policy (exit 1 and a traceback).
    Case("int of 5000 digits", 65, "not valid JSON", raw_latest(lambda b: b[:-1] + b',"x":' + b"9" * 5000 + b"}")),
    Case(
        "JSON nested 5000 deep",
        65,
        "not valid JSON",
        raw_latest(lambda b: b[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ),
    Case("stub as the newest commit", 65, "ends in a stub", stub_latest),
]

HOSTILE_CASES = [
    Case("tenant ../victim", 64, "tenant", args=["--tenant", "../victim"]),
    Case("tenant victim/../../x", 64, "tenant", args=["--tenant", "victim/../../x"]),
    Case("tenant of 300 characters", 64, "tenant", args=["--tenant", "t" * 300]),
    Case("run id ../victim/v1", 64, "run id", args=["--run-id", "../victim/v1"]),
    Case("run id ..", 64, "run id", args=["--run-id", ".."]),
    Case("run id with a newline", 64, "run id", args=["--run-id", "a\nb"]),
    Case("run id with a trailing newline", 64, "run id", args=["--run-id", "abc\n"]),
    Case("tenant with a trailing newline", 64, "tenant", args=["--tenant", "t1\n"]),
    Case("run id of 239 characters", 64, "at most 200 characters", args=["--run-id", "r" * 239]),
    Case("checkpoint uri with a host", 64, "file://", args=["--checkpoint-uri", "file://evil/x"]),
    Case("checkpoint uri s3://", 64, "known schemes", args=["--checkpoint-uri", "s3://b/x"]),
    Case("rerun from an unknown step", 64, "rerunFrom", args=["--rerun-from", "zzz"]),
    Case("params of the wrong type", 64, "mb:", params='{"mb": "lots"}'),
    Case("params not an object", 64, "params", params="[1, 2]"),
    Case("params not JSON", 64, "params", params="{mb: 1"),
    Case("params from a missing file", 64, "params", params="@/nonexistent/params.json"),
    Case("huge unknown param (5 MB)", 64, "unknown param", params="@HUGE"),
    Case("params nested 100000 deep", 64, "params", params="@DEEP"),
    Case("bad RESPAWN_RESUME_POLICY", 64, "resume", env={"RESPAWN_RESUME_POLICY": "Bogus"}),
    Case("bad RESPAWN_RETAIN", 64, "retain", env={"RESPAWN_RETAIN": "Bogus"}),
    Case("bad RESPAWN_TERM_DEADLINE_SECONDS", 64, "TERM_DEADLINE", env={"RESPAWN_TERM_DEADLINE_SECONDS": "soon"}),
    Case(
        "bad RESPAWN_PROGRESS_INTERVAL_SECONDS",
        64,
        "PROGRESS_INTERVAL",
        env={"RESPAWN_PROGRESS_INTERVAL_SECONDS": "often"},
    ),
    Case("RESPAWN_RESUME=maybe", 64, "resume: 'maybe'", env={"RESPAWN_RESUME": "maybe"}),
    Case("params file not UTF-8", 64, "not UTF-8", params="@LATIN1"),
    Case("params with a 5000-digit int", 64, "4300 digits", params="@BIGINT"),
    Case("checkpoint folder under a file", 64, "Not a directory", args=["--checkpoint-uri", "file:///etc/passwd/ck"]),
    Case("negative term deadline", 64, "term-deadline", args=["--term-deadline", "-1"]),
    Case("nan term deadline", 64, "term-deadline", env={"RESPAWN_TERM_DEADLINE_SECONDS": "nan"}),
    Case("infinite progress interval", 64, "progress-interval", args=["--progress-interval", "inf"]),
    Case("negative progress interval", 64, "progress-interval", env={"RESPAWN_PROGRESS_INTERVAL_SECONDS": "-5"}),
]


@dataclass
class Outcome:
    case: Case
    code: int
    message: str
    problems: list[str]
    touched: list[str]


class Corpus:
    """One store holding a victim tenant's finished run and a template run to copy."""

    def __init__(self, tmp: Path, uri: str, fingerprints: Callable[[], dict[str, str]] | None = None) -> None:
        self.tmp, self.uri, self.store = tmp, uri, open_store(uri)
        self.ask_twice = uri.startswith("file:")
        if fingerprints is not None:  # gs://: md5 and generation from one listing
            self.store.fingerprints = fingerprints  # type: ignore[attr-defined]
        self.rt = Runtime(tmp)
        for tenant, run in (("victim", "v1"), (TENANT, "template")):
            code, text, _ = self.rt.run(
                [
                    "run",
                    CHAIN,
                    "--params",
                    PARAMS,
                    "--run-id",
                    run,
                    "--tenant",
                    tenant,
                    "--checkpoint-uri",
                    uri,
                    "--retain",
                    "Always",
                ]
            )
            assert code == 0, text
        (tmp / "huge.json").write_text(json.dumps({"mb": 1, "colour": "x" * 5_000_000}))
        (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
        (tmp / "latin1.json").write_bytes('{"colour": "gr\u00fcn"}'.encode("latin-1"))
        (tmp / "bigint.json").write_text('{"mb": ' + "9" * 5000 + "}")

    def copy_template(self, run: str) -> None:
        """A finished run `run`: the template's objects with the run id rewritten."""
        src = f"{TENANT}/template/"
        for path in self.store.list(src):
            data = self.store.get(path)
            if "/commits/" in path:
                body = json.loads(data)
                body["run_guid"] = run
                data = seal_record(body)
            self.store.put(f"{TENANT}/{run}/" + path[len(src) :], data)

    def attempt(self, case: Case, run: str) -> tuple[int, str, str]:
        params = (
            case.params.replace("@HUGE", f"@{self.tmp}/huge.json")
            .replace("@DEEP", f"@{self.tmp}/deep.json")
            .replace("@LATIN1", f"@{self.tmp}/latin1.json")
            .replace("@BIGINT", f"@{self.tmp}/bigint.json")
        )
        # A flag beats its RESPAWN_* twin: leave --retain out when the case sets the env.
        retain = [] if "RESPAWN_RETAIN" in case.env else ["--retain", "Always"]
        args = [
            "run",
            CHAIN,
            "--params",
            params,
            "--run-id",
            run,
            "--tenant",
            TENANT,
            "--checkpoint-uri",
            self.uri,
            *retain,
            *case.args,
        ]
        code, text, term = self.rt.run(args, env=case.env, timeout=60)
        return code, (term or {}).get("message", ""), text

    def play(self, case: Case, index: int) -> Outcome:
        run = f"c{index}"
        problems: list[str] = []
        if case.corrupt is not None:
            self.copy_template(run)
            case.corrupt(self.store, run)
        before = snapshot(self.store, run)
        answers = []
        for _ in range(2 if case.expect == 65 and self.ask_twice else 1):
            # Asked again (an operator retry): the same answer, no crash loop.
            code, message, text = self.attempt(case, run)
            answers.append((code, message))
            if "Traceback" in text:
                problems.append("printed a traceback")
        code, message = answers[0]
        if code != case.expect:
            problems.append(f"exit {code}, expected {case.expect}: {message[:200]!r}")
        elif case.says.lower() not in message.lower():
            problems.append(f"message does not name the problem ({case.says!r}): {message[-300:]!r}")
        if len(message.encode()) > 4096:
            problems.append(f"message of {len(message.encode())} bytes (termination log holds 4096)")
        if len({a for a in answers}) > 1:
            problems.append(f"answered differently when asked again: {answers}")
        after = snapshot(self.store, run)
        touched = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
        if touched:
            problems.append(f"changed the store: {touched[:5]}")
        return Outcome(case, code, message, problems, touched)


def play_corpus(results: Results, corpus: Corpus, cases: list[Case], scenario: str, test: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda ic: corpus.play(ic[1], ic[0]), enumerate(cases)))
    victim = [o for o in outcomes if any("/victim/" in p or p.startswith("victim/") for p in o.touched)]
    failed = [f"{o.case.name}: {'; '.join(o.problems)}" for o in outcomes if o.problems]
    results.record(
        scenario,
        runs=len(cases),
        faults=len(cases),
        correct=len(cases) - len(failed),
        lost=len(victim),
        test=test,
        details=failed,
    )
    assert not failed, "\n".join(failed)


def test_bad_checkpoints_and_hostile_input_file(results: Results, tmp_path: Path) -> None:
    corpus = Corpus(tmp_path, f"file://{tmp_path}/ck")
    play_corpus(
        results,
        corpus,
        CHECKPOINT_CASES + HOSTILE_CASES,
        "Bad input: corrupt/foreign checkpoints, hostile ids and params (file://)",
        "test_bad_checkpoints_and_hostile_input_file",
    )


def test_bad_checkpoints_and_hostile_ids_gcs(results: Results, tmp_path: Path, gcs_emulator: GCSEmulator) -> None:
    bucket = gcs_emulator.make_bucket("bad-input")
    client = gcs_emulator.client()

    def fingerprints() -> dict[str, str]:
        return {
            b.name.removeprefix("ck/"): f"{b.md5_hash}/{b.generation}" for b in client.list_blobs(bucket, prefix="ck/")
        }

    corpus = Corpus(tmp_path, f"gs://{bucket}/ck", fingerprints)
    # What differs by store: reading damaged objects, ids that would escape the prefix.
    names = {
        "truncated commit",
        "commit is a JSON list",
        "foreign run id",
        "another tenant's commit in the log",
        "artifact ref with path traversal",
        "artifact missing",
        "artifact bytes flipped",
        "tenant ../victim",
        "run id ../victim/v1",
    }
    cases = [c for c in CHECKPOINT_CASES + HOSTILE_CASES if c.name in names]
    play_corpus(
        results,
        corpus,
        cases,
        "Bad input: corrupt/foreign checkpoints, hostile ids (gs://)",
        "test_bad_checkpoints_and_hostile_ids_gcs",
    )


def stray_commit_name(store: Store, run: str) -> None:
    """A file in commits/ whose name is digits to str.isdigit() but not to a parser: '².json'."""
    root = Path(store.root)  # type: ignore[attr-defined]  # file:// only
    (root / TENANT / run / "commits" / "\u00b2.json").write_text("{}")


def folder_at_next_slot(store: Store, run: str) -> None:
    seq = int(latest(store, run).rsplit("/", 1)[-1][:-5]) + 1
    (Path(store.root) / TENANT / run / "commits" / f"{seq:08d}.json").mkdir()  # type: ignore[attr-defined]


ODD_LOGS = [
    Case("stray commits/\u00b2.json", 0, "", stray_commit_name),
    Case("a folder at the next commit slot", 0, "", folder_at_next_slot),
]


def test_restart_starts_over_whatever_the_log_holds(results: Results, tmp_path: Path) -> None:
    """`Restart` never crashes on a damaged log: it starts over (exit 0). Odd but harmless
    entries (a stray name, a folder where the next commit goes) don't stop Compatible either."""
    corpus = Corpus(tmp_path, f"file://{tmp_path}/ck")
    restart = [
        Case(f"Restart over: {c.name}", 0, "", c.corrupt, args=["--resume-policy", "Restart"])
        for c in CHECKPOINT_CASES + ODD_LOGS
    ]

    def play(ic: tuple[int, Case]) -> str | None:
        index, case = ic
        run = f"c{index}"
        corpus.copy_template(run)
        assert case.corrupt is not None
        case.corrupt(corpus.store, run)
        code, message, text = corpus.attempt(case, run)
        if code != 0 or "Traceback" in text:
            return f"{case.name}: exit {code} {message[:200]!r}"
        return None

    with ThreadPoolExecutor(2) as pool:
        failed = [f for f in pool.map(play, enumerate(restart + ODD_LOGS)) if f]
    results.record(
        "Damaged logs under Restart, odd entries under Compatible (file://)",
        runs=len(restart) + 2,
        faults=len(restart) + 2,
        correct=len(restart) + 2 - len(failed),
        lost=0,
        test="test_restart_starts_over_whatever_the_log_holds",
        details=failed,
    )
    assert not failed, "\n".join(failed)
