"""Progress bars on a terminal, silence otherwise."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(total: int | None, description: str, unit: str = "rows") -> Any:
    """A tqdm bar on stderr (rows, rows/s, ETA), disabled when stderr is not a TTY."""
    return tqdm(
        total=total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True,
        file=sys.stderr, disable=not sys.stderr.isatty(), leave=False,
    )
