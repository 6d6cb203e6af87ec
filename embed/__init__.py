"""embed: move a pgvector store from one embedding model to another without mixing spaces.

The Python API is `embed.api` (docs/api.md): `api.backfill(cfg, url, "bge_m3")` is what
`embed backfill --space bge_m3` runs.
"""

__version__ = "0.1.0"
