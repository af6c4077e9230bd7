"""Log lines: syslog priorities and no timestamps for the journal, timestamps elsewhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from rtupscale.logs import stderr_is_journal, syslog_priority

SCRIPT = ("import logging; from rtupscale.logs import setup_logging; setup_logging(); "
          "log = logging.getLogger('rtupscale.daemon'); log.info('started'); log.warning('late'); log.error('broken')")


def _run(tmp_path, journal: bool) -> list[str]:
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as f:
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:
            st = os.fstat(f.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=f, env=env, check=True)
    return err.read_text().splitlines()


def test_journal_lines_carry_the_priority_and_no_timestamp(tmp_path):
    assert _run(tmp_path, journal=True) == [
        "<6>rtupscale.daemon: started",
        "<4>rtupscale.daemon: late",
        "<3>rtupscale.daemon: broken",
    ]


def test_terminal_lines_carry_time_and_level(tmp_path):
    lines = _run(tmp_path, journal=False)
    assert len(lines) == 3
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING rtupscale\.daemon: late", lines[1])


def test_a_journal_stream_of_another_file_is_not_ours(tmp_path):
    f = tmp_path / "other"
    f.write_text("")
    st = os.stat(f)
    assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"})


def test_priorities():
    assert [syslog_priority(n) for n in (50, 40, 30, 20, 10, 25, 5)] == [2, 3, 4, 6, 7, 6, 7]
