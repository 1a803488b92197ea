"""The project's one user-facing error type."""


class LDSegError(Exception):
    """Bad input, config or environment. The CLI prints its message as one line and exits 2.

    Messages name the file / section / key at fault and what was expected.
    """
