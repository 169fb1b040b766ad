"""Natural sort key: 'img_2' before 'img_10', so stored order follows file numbering."""
from __future__ import annotations

import re
from typing import List, Tuple, Union

_DIGITS = re.compile(r"(\d+)")


def natural_key(s: str) -> Tuple[Tuple[int, Union[int, str]], ...]:
    parts: List[Tuple[int, Union[int, str]]] = []
    for i, piece in enumerate(_DIGITS.split(s)):
        if i % 2:
            parts.append((0, int(piece)))
        elif piece:
            parts.append((1, piece.lower()))
    return tuple(parts) + ((2, s),)
