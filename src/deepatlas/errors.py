"""The one exception users see (its message is a single line the CLI prints before exiting with code 2), how messages
spell the user's options, and the one-line notices of choices made on the user's behalf."""
import functools
import sys


class DeepAtlasError(Exception):
    """A problem with the user's input (name, override, data file, run directory), not a bug."""


SPELL_AS_FLAGS = False
"""True under the `deepatlas` command: messages name its flags (--top-k); from Python they name keywords (top_k=)"""


def option(name: str) -> str:
    """How the user spelled option `name` (a keyword of the API): `--top-k` on the command line, `top_k=` in Python."""
    return f"--{name.replace('_', '-')}" if SPELL_AS_FLAGS else f"{name}="


def given(name: str, value) -> str:
    """Option `name` given `value`, as the user would write it: `--task regression`, or `task='regression'`."""
    return f"{option(name)} {value}" if SPELL_AS_FLAGS else f"{option(name)}{value!r}"


def setting(name: str, value) -> str:
    """A `--set` setting, as the user would write it: `--set missing=drop`, or `overrides={'missing': 'drop'}`."""
    return f"--set {name}={value}" if SPELL_AS_FLAGS else f"overrides={{{name!r}: {value!r}}}"


@functools.cache
def notice(line: str) -> None:
    """One line on stderr (stdout stays clean for --json) for a choice made from the user's data; said once a process,
    though a run reads its data again to evaluate."""
    print(line, file=sys.stderr)
