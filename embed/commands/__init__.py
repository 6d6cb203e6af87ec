"""Command modules that attach themselves to `embed.cli.cli` when imported."""

from embed.commands import backfill, demo, honcho, smoke  # noqa: F401
