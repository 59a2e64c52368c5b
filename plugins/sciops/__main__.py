"""``python -m sciops``: the ``sciops`` command (:mod:`sciops.cli.main`), every subcommand of it."""
from sciops.cli.main import main
raise SystemExit(main())
