"""Is a trial's answer to the sample input the baseline's answer? Same structure, close numbers.

Both answers are parsed as JSON when they are JSON; then dicts must have the same keys, lists
the same lengths, strings and booleans must be equal, and numbers must agree within
``ATOL + RTOL * |baseline|`` (the tolerance of ``numpy.isclose``). Answers that are not JSON
must be byte for byte equal. ``answer_difference`` names the first difference, or None.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

RTOL: Final = 1e-2
ATOL: Final = 1e-4
TOLERANCE_TEXT: Final = f"numbers within {ATOL:g} + {RTOL:g} x |baseline|"


def answer_difference(baseline: bytes, answer: bytes) -> str | None:
    """None when ``answer`` matches ``baseline``; else where and how it differs (one line)."""
    if baseline == answer:
        return None
    try:
        expected, got = json.loads(baseline), json.loads(answer)
    except (UnicodeDecodeError, ValueError):
        return f"the answer's bytes differ ({len(answer)} bytes, baseline {len(baseline)})"
    return _difference(expected, got, "$")


def _difference(expected: Any, got: Any, where: str) -> str | None:
    if isinstance(expected, bool) or isinstance(got, bool):
        return None if expected is got else f"{where}: {_short(got)} != {_short(expected)}"
    if isinstance(expected, int | float) and isinstance(got, int | float):
        if math.isclose(got, expected, rel_tol=RTOL, abs_tol=ATOL) or (
            math.isnan(expected) and math.isnan(got)
        ):
            return None
        return f"{where}: {got!r} != {expected!r}"
    if type(expected) is not type(got):
        return f"{where}: {type(got).__name__} instead of {type(expected).__name__}"
    if isinstance(expected, dict):
        if set(expected) != set(got):
            keys = sorted(set(expected) ^ set(got), key=str)
            return f"{where}: keys differ ({', '.join(map(str, keys[:3]))})"
        for key in expected:
            found = _difference(expected[key], got[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if len(expected) != len(got):
            return f"{where}: {len(got)} items instead of {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            found = _difference(e, g, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if expected == got else f"{where}: {_short(got)} != {_short(expected)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
