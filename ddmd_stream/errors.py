"""The base of every error that means bad input (config, files, streams).

Tasks and the launcher report an `InputError` as one clear line and exit with status 2;
anything else is a bug and gets a traceback in the task's log.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input: the message names the file or field and says what to do."""
