"""Interactive notebook explorers for sampling: thin ipywidgets wiring around ``generate`` and ``viz``.

Every explorer loads the bundled demo model when no model is given, shows its errors inside the
widget (one escaped line, never a traceback) and keeps its data (``.result``, ``.trace``) and child
widgets (``.prompt``, ``.temperature``, ``.step``, ``.plot``, ...) as attributes, so it can be
driven from code as well as by hand. ``.generate_calls`` counts the model calls.

Where things are: ``base`` (loading, busy state, errors, counted calls), ``controls`` (the shared
slider panel), ``token_text`` (clickable coloured tokens), ``layout`` (controls beside the view),
and one module per explorer. HTML and figures come from :mod:`txtgen_nb.viz`.

Usage::

    from txtgen_nb.widgets import SamplingExplorer, DistributionExplorer, CompareExplorer, BranchExplorer
    SamplingExplorer(prompt="Once upon a time")          # last expression of a cell: shows the widget
    CompareExplorer(settings=[SamplingSettings(0.0, 0), SamplingSettings(1.2, 0)])
"""

from txtgen_nb.widgets.base import Explorer
from txtgen_nb.widgets.branch_explorer import BranchExplorer
from txtgen_nb.widgets.compare_explorer import CompareExplorer
from txtgen_nb.widgets.controls import SamplingControls
from txtgen_nb.widgets.distribution_explorer import DistributionExplorer
from txtgen_nb.widgets.sampling_explorer import SamplingExplorer
from txtgen_nb.widgets.token_text import TokenText

__all__ = ["BranchExplorer", "CompareExplorer", "DistributionExplorer", "Explorer", "SamplingControls",
           "SamplingExplorer", "TokenText"]
