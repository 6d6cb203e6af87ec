"""Command modules that attach themselves to `embed.cli.cli` when imported."""

from embed.commands import backfill, backup, demo, honcho, retire, smoke  # noqa: F401
