"""`python -m kaito_operator.provisioner` runs the gpu-provisioner."""

from kaito_operator.provisioner.operator import main

raise SystemExit(main())
