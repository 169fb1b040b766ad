"""Progress bars: one wrapper so every long loop looks the same and can be silenced."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

from tqdm.auto import tqdm


def progress(iterable: Optional[Iterable] = None, *, desc: str = "", total: Optional[int] = None,
             disable: Optional[bool] = None, leave: bool = False, unit: str = "it"):
    """tqdm on stderr; disabled when DEEPSLOTH_NO_PROGRESS is set or stderr is not a terminal."""
    if disable is None:
        disable = bool(os.environ.get("DEEPSLOTH_NO_PROGRESS")) or not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=leave, unit=unit,
                dynamic_ncols=True, file=sys.stderr)
