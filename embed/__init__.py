"""embed: move a pgvector store from one embedding model to another without mixing spaces."""

__version__ = "0.1.0"
