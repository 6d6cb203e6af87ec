"""Helpers for the tests (not collected): fixtures' builders, servers, planted inputs."""
