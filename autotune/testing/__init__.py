"""What the tests and the benchmarks share: landscapes (tables of every configuration's goodput,
read from CSV or generated), the table evaluator that replays one, and the contract every
``Evaluator`` keeps."""

from autotune.testing._contract import CONTRACT, check_evaluator, check_result
from autotune.testing._evaluator import TableEvaluator, noise_factor
from autotune.testing._generator import (
    DEFAULT_RANGES,
    FAMILIES,
    HELD_OUT_SEEDS,
    SETS,
    TUNING_SEEDS,
    WIDE_RANGES,
    Profile,
    Ranges,
    generate,
    landscape_set,
)
from autotune.testing._landscape import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    Landscape,
    LandscapeError,
    Row,
    landscape_files,
    read_landscape,
    space_from_configs,
    write_landscape,
)

__all__ = [
    "COLUMNS",
    "CONTRACT",
    "DEFAULT_RANGES",
    "FAMILIES",
    "HELD_OUT_SEEDS",
    "OPTIONAL_COLUMNS",
    "SETS",
    "TUNING_SEEDS",
    "WIDE_RANGES",
    "Landscape",
    "LandscapeError",
    "Profile",
    "Ranges",
    "Row",
    "TableEvaluator",
    "check_evaluator",
    "check_result",
    "generate",
    "landscape_files",
    "landscape_set",
    "noise_factor",
    "read_landscape",
    "space_from_configs",
    "write_landscape",
]
