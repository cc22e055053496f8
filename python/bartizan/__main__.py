"""`python -m bartizan`: the same as the `bartizan` command."""

from bartizan.cli import main

raise SystemExit(main())
