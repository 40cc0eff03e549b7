"""`python -m kaito_operator` runs the workspace controller."""

from kaito_operator.workspace.operator import main

raise SystemExit(main())
