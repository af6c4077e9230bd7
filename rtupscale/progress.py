"""The library's overall progress bar: files done of all, hours of audio, ETA.

Shown on stderr only when the caller says so (the CLI: both stdout and stderr are
terminals and no ``--json``). The ETA follows the audio converted, not the file count,
since one long file weighs more than ten short ones; each file's length comes from its
header, before it is decoded.
"""

from __future__ import annotations

from pathlib import Path


class LibraryProgress:
    """A bar over ``durations`` (input path -> seconds of audio, 0 where unknown).

    Call :meth:`start` when a file begins (it is named on the bar), :meth:`finished` when
    it ends, :meth:`close` at the end.
    """

    def __init__(self, durations: dict[Path, float]):
        from tqdm import tqdm

        self._durations = durations
        self._files, self._done, self._failed = len(durations), 0, 0
        total_h = sum(durations.values()) / 3600
        self._bar = tqdm(total=total_h, unit="h", position=0, leave=True,
                         bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} h of audio "
                                    "[{elapsed}<{remaining}]{postfix}")
        self._refresh()

    def _refresh(self, current: str = "") -> None:
        failed = f", {self._failed} failed" if self._failed else ""
        self._bar.set_description_str(f"{self._done + self._failed}/{self._files} files{failed}", refresh=False)
        self._bar.set_postfix_str(current, refresh=True)

    def start(self, path: Path) -> None:
        self._refresh(path.name)

    def finished(self, path: Path, failed: bool = False) -> None:
        if failed:
            self._failed += 1
        else:
            self._done += 1
        hours = self._durations.get(path, 0.0) / 3600
        self._bar.update(max(0.0, min(hours, self._bar.total - self._bar.n)))  # float sums may overshoot
        self._refresh()

    def close(self) -> None:
        self._bar.close()
