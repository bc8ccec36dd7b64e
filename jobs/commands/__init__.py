"""One module per command family; each exposes `commands: list[click.Command]`."""
