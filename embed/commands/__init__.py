"""Command modules that attach themselves to `embed.cli.cli` when imported."""

from embed.commands import backfill, backup, cutover, demo, evidence, honcho, retire, shadow, smoke  # noqa: F401
