"""``python -m bigain.classify ...`` (same options as ``bigain classify``); also the entry point for
``accelerate launch -m bigain.classify ...`` and ``torchrun -m bigain.classify ...``."""

from .cli import cli_main

raise SystemExit(cli_main())
