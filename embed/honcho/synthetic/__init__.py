"""A synthetic Honcho: its schema, a PL/EN corpus, a seeder and a live writer (demo and tests)."""
