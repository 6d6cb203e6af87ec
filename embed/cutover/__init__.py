"""Switching what production reads: gates in force, view and Honcho in-place switches, rollback."""
