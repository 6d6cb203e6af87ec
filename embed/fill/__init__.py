"""Filling a space: backfill, sync, their chunk leases and run records, progress, status."""
