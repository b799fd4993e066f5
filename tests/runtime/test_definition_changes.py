"""Definition changes between attempts: code edits, version bumps, re-runs, and the
intra-step progress that must never cross them (in-process runs on a memory store)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from pipeline_runtime import Pipeline, step
from pipeline_runtime.checkpoint import RunLog
from pipeline_runtime.code_digest import code_digest
from pipeline_runtime.errors import IncompatibleCheckpoint
from pipeline_runtime.storage.memory import MemoryStore

SEEN: list[tuple[str, Any]] = []
"""(step, what it saw) of every step execution, across the classes below."""
FAIL: list[str] = []
"""Steps that raise once (a global the step reads: not part of its code)."""


def make(version: str = "1", a_body: str = "ctx['a'] = 1", long_version: str = "1") -> type[Pipeline]:
    """A pipeline `defs` of steps a, long, c; compiled from source so a test can edit a step's body."""
    source = textwrap.dedent(f"""
        class Defs(Pipeline):
            name = "defs"
            version = {version!r}

            @step
            def a(self, ctx):
                SEEN.append(("a", None))
                {a_body}

            @step(version={long_version!r})
            def long(self, ctx):
                SEEN.append(("long", ctx.progress))
                ctx.save_progress({{"i": 3}})
                if "long" in FAIL:
                    FAIL.remove("long")
                    raise RuntimeError("preempted in long")
                ctx["long"] = 2

            @step
            def c(self, ctx):
                SEEN.append(("c", None))
                ctx["c"] = ctx["a"] + ctx["long"]
    """)
    namespace: dict[str, Any] = {"Pipeline": Pipeline, "step": step, "SEEN": SEEN, "FAIL": FAIL}
    exec(compile(source, "<defs>", "exec"), namespace)
    return namespace["Defs"]  # type: ignore[no-any-return]


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> MemoryStore:
    monkeypatch.setenv("RESPAWN_PROGRESS_INTERVAL_SECONDS", "0")  # every save_progress commits
    SEEN.clear()
    return MemoryStore(f"memory://defs-{request.node.name}")  # memory stores are shared by URI


def interrupted_in_long(store: MemoryStore) -> None:
    """Run until `long` has committed its progress, then leave the log as a SIGKILL would:
    the `failed` commit the raise wrote is taken away, the progress commit is the newest."""
    FAIL[:] = ["long"]
    with pytest.raises(Exception, match="preempted in long"):
        make()(store=store, run_id="r", retain="Always").run()
    log = RunLog(store, "default", "r")
    newest = log.seqs()[-1]
    assert log.read(newest).kind == "failed" and log.read(newest - 1).kind == "progress"
    store.delete(f"default/r/commits/{newest:08d}.json")
    assert SEEN == [("a", None), ("long", None)]
    SEEN.clear()


def test_comments_and_formatting_do_not_change_the_code_digest() -> None:
    plain = "def f(ctx):\n    ctx['x'] = [i * 2 for i in range(3)]\n"
    noisy = "\n\n# a comment\ndef f(ctx):  # here too\n\n    ctx['x'] = [i * 2\n               for i in range(3)]\n"
    edited = "def f(ctx):\n    ctx['x'] = [i * 3 for i in range(3)]\n"

    def digest(src: str) -> str:
        ns: dict[str, Any] = {}
        exec(compile(src, "<f>", "exec"), ns)
        return code_digest(ns["f"])

    assert digest(plain) == digest(noisy) != digest(edited)


def test_progress_is_kept_for_the_same_step_definition(store: MemoryStore) -> None:
    interrupted_in_long(store)
    make()(store=store, run_id="r", retain="Always").run()
    assert SEEN == [("long", {"i": 3}), ("c", None)]


def test_rerun_from_a_step_never_hands_it_its_old_progress(store: MemoryStore) -> None:
    interrupted_in_long(store)
    summary = make()(store=store, run_id="r", retain="Always").run(rerun_from="long")
    assert SEEN == [("long", None), ("c", None)]
    assert summary.skipped == ["a"]


def test_a_version_bump_drops_the_steps_old_progress(store: MemoryStore) -> None:
    interrupted_in_long(store)
    make(long_version="2")(store=store, run_id="r", retain="Always").run()
    assert SEEN == [("long", None), ("c", None)]


def test_an_edited_step_body_reruns_from_that_step_under_compatible(store: MemoryStore) -> None:
    interrupted_in_long(store)
    summary = make(a_body="ctx['a'] = 10")(store=store, run_id="r", retain="Always").run()
    assert summary.executed == ["a", "long", "c"]
    assert SEEN[1] == ("long", None)  # a re-ran, so long starts over too


def test_an_edited_step_body_is_refused_under_strict_naming_the_step(store: MemoryStore) -> None:
    interrupted_in_long(store)
    with pytest.raises(IncompatibleCheckpoint, match="the code of step 'a' changed"):
        make(a_body="ctx['a'] = 10")(store=store, run_id="r", retain="Always", resume_policy="Strict").run()
    assert SEEN == []


def test_a_pipeline_version_bump_keeps_nothing_under_compatible(store: MemoryStore) -> None:
    interrupted_in_long(store)
    summary = make(version="2")(store=store, run_id="r", retain="Always").run()
    assert summary.executed == ["a", "long", "c"] and summary.skipped == []
