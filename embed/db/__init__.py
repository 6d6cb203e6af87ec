"""Plumbing: connections, identifier quoting, the embedded PostgreSQL and Redis, test pause points."""
