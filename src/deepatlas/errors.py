"""The one exception users see: its message is a single line the CLI prints before exiting with code 2."""


class DeepAtlasError(Exception):
    """A problem with the user's input (name, override, data file, run directory), not a bug."""
