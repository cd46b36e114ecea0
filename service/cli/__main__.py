"""`python -m service.cli`: the same entry point as the `leadrelay` script."""

from service.cli import main

raise SystemExit(main())
