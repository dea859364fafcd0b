"""`python -m vmm` is the `vmm` command."""
from .cli import main

raise SystemExit(main())
