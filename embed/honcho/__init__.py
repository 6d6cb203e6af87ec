"""Honcho, the first user: the settings its in-place cutover needs (settings.py), and a synthetic
Honcho (synthetic/) to run the procedure against without a running Honcho."""
