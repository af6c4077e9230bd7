"""The one base class for errors a user can fix (bad config, model, file, device), and the
exception a terminating signal becomes where a command cleans up after itself.

The CLI prints a UserError as one line and exits with status 2; anything else is a bug
or an environment failure and keeps its traceback.
"""

import signal


class UserError(Exception):
    """An error whose message says what was wrong and what is allowed, on one line."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: raised in the main thread so that ``finally`` clauses and
    ``except BaseException`` clean-ups run (as they do for Ctrl-C's KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name
