"""``python -m respawn_operator`` is ``respawn-operator``."""

from respawn_operator.cli import main

raise SystemExit(main())
