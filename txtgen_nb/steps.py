"""Finding the steps worth looking at in a generation trace."""

from __future__ import annotations

import numpy as np

from txtgen_nb import sampling
from txtgen_nb.generation import SamplingSettings, Trace


def most_informative_step(trace: Trace, row: int = 0, settings: SamplingSettings | None = None,
                          within: int = 12) -> int:
    """The step with the highest entropy before filtering among the first ``within`` steps.

    Usage: ``most_informative_step(result.trace)``
    """
    length = min(int(trace.lengths[row]), within)
    if length <= 0:
        return 0
    stages = (settings or trace.settings[row]).stages(trace.logits[row, :length])
    return int(np.argmax(np.asarray(sampling.entropy(stages.temperature))))
