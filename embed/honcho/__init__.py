"""A local mirror of Honcho v3's Postgres tables plus a seeded synthetic memory corpus, so the
migration tooling can be exercised end to end without a running Honcho."""
