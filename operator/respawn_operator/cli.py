"""``respawn-operator``: run the PipelineRun operator (kopf) in the foreground.

respawn-operator                       # all namespaces (or RESPAWN_NAMESPACES)
respawn-operator -n team-a -n team-b   # only these namespaces
respawn-operator --peering respawn     # standby replicas via kopf peering (needs its CRD)
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import logging
import os
import random
import socket

from pipeline_runtime.extras import exit_if_missing

try:
    import kopf
except ModuleNotFoundError as e:  # `pip install respawn` without [operator]: one line, no traceback
    exit_if_missing(e, "respawn-operator")

from respawn_operator.config import OperatorConfig


def own_identity() -> str:
    """This replica's name in the peering object, as kopf would pick it (``detect_own_id``):
    the pod's name (``POD_ID``, which the chart sets), else ``user@host/timestamp/random``."""
    pod = os.environ.get("POD_ID")
    if pod is not None:
        return pod
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    rnd = "".join(random.choices("abcdefhijklmnopqrstuvwxyz0123456789", k=3))
    return f"{getpass.getuser()}@{socket.gethostname()}/{stamp}/{rnd}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="respawn-operator", description="Reconcile PipelineRuns into Job attempts.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="serve this namespace (repeatable, globs allowed)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace (default)")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="no peering: assume this is the only replica")
    peering.add_argument(
        "--peering", metavar="NAME", help="kopf peering object shared by the replicas (one active, others standby)"
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority of this replica; the highest works, the others stand by (default "
        "with --peering: a random one, since kopf pauses every replica when priorities tie)",
    )
    parser.add_argument("--liveness", metavar="URL", help="serve a liveness probe, e.g. http://0.0.0.0:8081/healthz")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)

    try:
        config = OperatorConfig.from_env()
    except ValueError as exc:  # a setting of the chart's config (RESPAWN_*): one line, no traceback
        parser.exit(64, f"respawn-operator: {exc}\n")
    namespaces = list(args.namespace) or ([] if args.all_namespaces else list(config.namespaces))
    kopf.configure(verbose=args.verbose, quiet=args.quiet)
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        from respawn_operator import handlers  # registers the handlers
    except ModuleNotFoundError as e:  # kopf installed on its own, without the rest of [operator]
        exit_if_missing(e, "respawn-operator")

    # The chart's replicas are pods of one Deployment and cannot be given distinct fixed
    # priorities; with equal ones kopf pauses them all ("Possibly conflicting operators
    # with the same priority"), and no run is served. A random priority per process
    # breaks the tie; the newest pod may outrank the active one, which then hands over.
    priority = args.priority
    if priority is None:
        priority = random.SystemRandom().randint(1, 2**31 - 1) if args.peering else 0

    # kopf's pause stops only its watches; the reconciler's own loops ask a gate that
    # applies kopf's peering rule to the same peering object, under the same identity.
    identity = own_identity()
    settings = handlers.Settings(
        identity=identity,
        peering=None if args.standalone else args.peering,
        priority=priority,
        clusterwide=not namespaces,
        namespaces=tuple(namespaces),
    )
    kopf.run(
        memo=kopf.Memo(settings=settings),  # the handlers' per-operator state (handlers.py)
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True if args.standalone else (False if args.peering else None),
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
