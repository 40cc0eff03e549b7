"""Local simulators used by component tests and the sandbox (no cluster, no cloud)."""
