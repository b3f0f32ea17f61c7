"""``mschedule``: the operator's command line. It talks only HTTP to the web tier (see docs/cli.md)."""
