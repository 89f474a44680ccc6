"""Layout pieces shared by the explorers: one row of controls beside the view, sized for a
1280x720 projector with the JupyterLab sidebar collapsed (styles: ``viz.EXPLORER_CSS``)."""

from __future__ import annotations

import html

import ipywidgets as widgets

from txtgen_nb import viz
from txtgen_nb.api import MODELS
from txtgen_nb.widgets.controls import COLUMN


def model_parts(name: str) -> tuple[str, str]:
    """A :data:`txtgen_nb.api.MODELS` name split into its short name and what the model knows (the part
    in brackets). Usage: ``model_parts("SmolLM2-135M-Instruct (a real small LLM)")  # ('SmolLM2-…', 'a real…')``"""
    short, _, what = name.partition(" (")
    return short, what.removesuffix(")")


def model_picker(value: str | None = None, shown: bool = True) -> widgets.Dropdown:
    """The **Model** menu: the tutorials' models (:data:`txtgen_nb.api.MODELS`), the demo first, each
    listed by its short name (its description goes in :func:`model_note`, so nothing is cut off);
    the value is the full name. Hidden with ``shown=False`` (an explorer given its own model)."""
    options = [(model_parts(name)[0], name) for name in MODELS]
    picker = widgets.Dropdown(options=options, value=value or next(iter(MODELS)), description="Model",
                              style={"description_width": "3.5em"}, layout=widgets.Layout(width="100%"))
    picker.layout.display = "" if shown else "none"
    return picker


def model_note(name: str) -> str:
    """The HTML line under the Model menu: what the chosen model knows (the part of its name in brackets)."""
    what = model_parts(name)[1]
    return f'<div class="tg-model-note">{html.escape(what)}</div>' if what else ""


def chat_box(value: bool = False) -> widgets.Checkbox:
    """**Chat**: wrap the prompt as the user's message in the model's chat template (shown only for
    a model that has one)."""
    return widgets.Checkbox(value=value, description="Chat: send the prompt as a chat message", indent=False,
                            layout=widgets.Layout(width="auto", margin="2px 8px 2px 0"))


def truth_box() -> widgets.Checkbox:
    """**Grammar**: mark each candidate ✓ / ✗ by what the story grammar allows next (shown only for the
    demo model, which the grammar trained)."""
    return widgets.Checkbox(value=False, description="Mark what the grammar allows (✓ / ✗)", indent=False,
                            layout=widgets.Layout(width="auto", margin="2px 8px 2px 0"))


def prompt_box(prompt: str) -> widgets.Textarea:
    """The prompt, acting when it loses focus (``continuous_update=False``)."""
    return widgets.Textarea(value=prompt, placeholder="Prompt", continuous_update=False,
                            layout=widgets.Layout(width="100%", height="4.2em"))


def plot_image() -> widgets.Image:
    """An image for a PNG figure, shown at its own size (shrunk only when the column is narrower),
    and hidden while it has none (an empty image shows a broken-image icon)."""
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto", display="none"))
    image.add_class("tg-plot")
    image.observe(lambda change: setattr(image.layout, "display", None if change["new"] else "none"), "value")
    return image


def step_row(*children: widgets.Widget) -> widgets.HBox:
    """A row under the text: the step slider first, taking the free width."""
    return widgets.HBox(list(children), layout=widgets.Layout(width="100%", align_items="center"))


def explorer_row(controls: list[widgets.Widget], view: list[widgets.Widget], *below: widgets.Widget) -> widgets.VBox:
    """Controls in a column on the left, the text and the plot they drive on the right."""
    left = widgets.VBox(controls, layout=widgets.Layout(width=COLUMN, min_width=COLUMN, margin="0 12px 0 0"))
    right = widgets.VBox(view, layout=widgets.Layout(flex="1 1 auto", min_width="0"))
    left.add_class("tg-controls")
    right.add_class("tg-view-column")
    row = widgets.HBox([left, right], layout=widgets.Layout(width="100%", align_items="flex-start"))
    root = widgets.VBox([widgets.HTML(viz.EXPLORER_CSS), row, *below], layout=widgets.Layout(width="100%"))
    root.add_class("tg-explorer")
    return root
