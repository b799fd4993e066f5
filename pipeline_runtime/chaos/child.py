"""`python -m pipeline_runtime.chaos.child run|cleanup ...`: the `pipeline-runtime`
command, with its checkpoint store wrapped in a PausingStore (store.py).

The chaos engine starts every attempt through this module, so the pipeline runs on
the real runtime, in a real process, and can be stopped at a storage operation.
"""

from __future__ import annotations

import sys

from ..cli import main as cli_main
from ..storage.base import Store
from .store import PausingStore


def main() -> None:
    wrapped: list[PausingStore] = []

    def wrap(store: Store) -> Store:
        pausing = PausingStore.from_env(store)
        wrapped.append(pausing)
        return pausing

    try:
        cli_main(sys.argv[1:], wrap_store=wrap)
    finally:
        for store in wrapped:
            store.write_stats()


if __name__ == "__main__":
    main()
