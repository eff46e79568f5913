"""The commands, one module per job; each registers itself on `conveyor_cli.app.app`."""
