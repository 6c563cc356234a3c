"""Subcommands of `hrtemflow`, one module per stage (see hrtemflow.cli)."""
