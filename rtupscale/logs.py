"""Log lines for a terminal, or for the systemd journal.

Under systemd (stderr is the journal stream named by ``$JOURNAL_STREAM``) each line starts
with its syslog priority, ``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug, which
journald strips and files as the entry's priority, and carries no timestamp: the journal
stamps every entry itself. Elsewhere lines read ``HH:MM:SS LEVEL logger: message``.
"""

from __future__ import annotations

import logging
import os
import sys

SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (a level between two takes the lower one's)."""
    for level in sorted(SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return SYSLOG_PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; a traceback's lines follow at the same priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return "\n".join(prefix + line for line in text.splitlines())


def stderr_is_journal(env: dict | None = None, stream=None) -> bool:
    """True when stderr is the journal stream systemd gave us (``$JOURNAL_STREAM`` is
    ``device:inode`` of it; a child whose stderr was redirected inherits the variable, so
    the two are compared)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(verbose: bool = False) -> None:
    """The root logger's one handler, to stderr, in the format for where stderr goes."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_rtupscale", False):
            root.removeHandler(h)
    handler._rtupscale = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
