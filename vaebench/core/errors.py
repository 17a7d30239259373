"""Errors meant for people rather than for debuggers."""


class UserError(Exception):
    """An expected mistake (bad spec, missing data or weights): the CLI prints the message, no traceback.

    The message should say what went wrong, where (file, dotted path, folder) and how to fix it.
    """
