"""`python -m depthcard` is the `depthcard` command."""

from depthcard.cli.main import main

raise SystemExit(main())
