"""`python -m pvtranslate` is the `pvtranslate` command."""
from .cli import main

raise SystemExit(main())
