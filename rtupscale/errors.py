"""The one base class for errors a user can fix (bad config, model, file, device).

The CLI prints such an error as one line and exits with status 2; anything else is a bug
or an environment failure and keeps its traceback.
"""


class UserError(Exception):
    """An error whose message says what was wrong and what is allowed, on one line."""
