"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class EmbedError(Exception):
    """A problem the operator can fix; its message is one clear line, free of secrets."""
