"""`python -m embed` is the `embed` command."""

from embed.cli import main

main()
