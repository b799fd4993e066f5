"""`python -m pipeline_runtime.chaos.child run|cleanup ...`: the `pipeline-runtime`
command, with its checkpoint store wrapped in a PausingStore (store.py).

The chaos engine starts every attempt through this module (in a fresh process, or
forked by forkserver.py), so the pipeline runs on the real runtime, in a real
process, and can be stopped at a storage operation.
"""

from __future__ import annotations

import sys

from ..cli import main as cli_main
from ..storage import set_durable_default
from ..storage.base import Store
from .store import PausingStore


def run(argv: list[str]) -> int:
    """Run the command; its exit code (the store's counts are written on the way out)."""
    wrapped: list[PausingStore] = []

    def wrap(store: Store) -> Store:
        pausing = PausingStore.from_env(store)
        wrapped.append(pausing)
        return pausing

    code = 0
    try:
        # A chaos session kills processes, never the machine: what a killed process wrote
        # is in the page cache and every later attempt reads it. fsync guards only against
        # a host crash, which no case simulates (docs/chaos.md, Cost): not durable, for the
        # checkpoint and for every store the pipeline opens itself (its outputs).
        set_durable_default(False)
        cli_main(argv, wrap_store=wrap)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        for store in wrapped:
            store.write_stats()
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
