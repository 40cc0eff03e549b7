"""The `kaito` command: offline tools over the catalog and Workspace files."""
