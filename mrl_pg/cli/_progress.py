"""Progress bars on a terminal, silence otherwise."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from mrl_pg.index.build import PHASE_DONE, IndexProgress


def progress_bar(total: int | None, description: str, unit: str = "rows") -> Any:
    """A tqdm bar on stderr (rows, rows/s, ETA), disabled when stderr is not a TTY."""
    return tqdm(
        total=total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True,
        file=sys.stderr, disable=not sys.stderr.isatty(), leave=False,
    )


class IndexProgressBar:
    """A tqdm bar on stderr, restarted at each phase of the build."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._phase: str | None = None

    def update(self, progress: IndexProgress) -> None:
        if progress.phase == PHASE_DONE:
            if self._bar is not None:
                self._bar.n = self._bar.total or progress.done
                self._bar.refresh()
            return
        if progress.phase != self._phase or self._bar is None:
            if self._bar is not None:
                self._bar.close()
            self._phase = progress.phase
            self._bar = tqdm(total=progress.total, desc=progress.phase, unit=f" {progress.unit}",
                             file=sys.stderr, dynamic_ncols=True)
        if progress.total is not None and progress.total != self._bar.total:
            self._bar.total = progress.total
        self._bar.n = progress.done
        self._bar.refresh()

    def warn(self, message: str) -> None:
        tqdm.write(f"warning: {message}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
