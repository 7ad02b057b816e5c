"""The one exception users see: its message is a single line the CLI prints before exiting with code 2."""


class DeepAtlasError(Exception):
    """A problem with the user's input (name, override, data file, run directory), not a bug."""


SPELL_AS_FLAGS = False
"""True under the `deepatlas` command: messages name its flags (--top-k); from Python they name keywords (top_k=)"""


def option(name: str) -> str:
    """How the user spelled option `name` (a keyword of the API): `--top-k` on the command line, `top_k=` in Python."""
    return f"--{name.replace('_', '-')}" if SPELL_AS_FLAGS else f"{name}="
