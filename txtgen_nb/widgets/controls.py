"""The shared control panel: sampling sliders, seed with a "New sample" button, length and the
main button. It only builds and lays out widgets; the explorers wire them.

Usage::

    controls = SamplingControls(temperature=0.8, top_k=50, max_new_tokens=40)
    controls.settings()              # SamplingSettings(temperature=0.8, top_k=50, ...)
    controls.panel                   # the VBox to show
"""

from __future__ import annotations

import dataclasses
import secrets

import ipywidgets as widgets

from txtgen_nb import sampling
from txtgen_nb.sampling import SamplingSettings

COLUMN = "330px"  # the controls column: beside the plot on a 1280 px projector
_SLIDER = dict(continuous_update=False, style={"description_width": "7.5em"},
               layout=widgets.Layout(width="100%"))
FALLBACK = SamplingSettings(0.8, 50, 1.0, 0.0)
ADVANCED_HEIGHT = "12em"  # the open Advanced section: about six sliders shown, the rest scroll
NEW_TOKENS_MAX = 500  # the length slider's end: a long context (SmolLM2: 8,192) would make it too coarse

def advanced_sliders(start: SamplingSettings = FALLBACK) -> dict[str, widgets.Widget]:
    """One slider per advanced sampler setting (act on release; ``sampling.ADVANCED``, in chain
    order), starting at ``start``'s values.

    Usage: ``advanced_sliders()["typical_p"].value = 0.9``
    """
    sliders: dict[str, widgets.Widget] = {}
    for field in sampling.ADVANCED:
        low, high, step = field.slider
        value = getattr(start, field.name)
        kind = widgets.IntSlider if field.integer else widgets.FloatSlider
        extra = {} if field.integer else {"readout_format": ".4g"}
        description = field.title[0].upper() + field.title[1:]
        sliders[field.name] = kind(value=value, min=min(low, value), max=max(high, value), step=step,
                                   description=description, tooltip=_origin(field.name), **_SLIDER, **extra)
    return sliders


_ORIGINS = {f.name: rule.origin for rule in sampling.RULES for f in rule.fields}


def _origin(field: str) -> str:
    """Where the rule that reads ``field`` comes from (a slider's tooltip)."""
    return _ORIGINS[field]


def new_tokens_limit(context: int) -> int:
    """The length slider's maximum for a model with ``context`` tokens (the prompt needs at least one).

    Usage: ``new_tokens_limit(8192)  # 500``
    """
    return max(1, min(context - 1, NEW_TOKENS_MAX))


def fresh_seed() -> int:
    """A random seed for "New sample" (below one million, easy to read and retype)."""
    return secrets.randbelow(1_000_000)


class SamplingControls:
    """Temperature / top-k / top-p / min-p sliders (act on release), seed, "New sample", an
    optional max-new-tokens slider and the main button, in one column (``.panel``).

    A bad starting setting falls back to the defaults; ``.problem`` says why (the explorer shows it).
    """

    def __init__(self, *, temperature: float = 0.8, top_k: int = 50, top_p: float = 1.0, min_p: float = 0.0,
                 seed: int = 0, max_new_tokens: int | None = None, context: int = 128,
                 button: str = "Generate", sliders: bool = True, advanced: SamplingSettings | None = None) -> None:
        self.problem = ""
        self.sliders = sliders
        try:
            start = dataclasses.replace(advanced or FALLBACK, temperature=temperature, top_k=top_k, top_p=top_p,
                                        min_p=min_p)
        except ValueError as err:  # a bad starting value: keep the defaults, the explorer shows why
            self.problem = str(err)
            start = FALLBACK
        self.start = start
        temperature, top_k, top_p, min_p = start.temperature, start.top_k, start.top_p, start.min_p
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=max(2.0, temperature), step=0.05,
                                               description="Temperature", readout_format=".2f", **_SLIDER)
        self.top_k = widgets.IntSlider(value=top_k, min=0, max=max(100, int(top_k)), description="Top-k (0 off)",
                                       **_SLIDER)
        self.top_p = widgets.FloatSlider(value=top_p, min=0.0, max=1.0, step=0.01, description="Top-p (1 off)",
                                         readout_format=".2f", **_SLIDER)
        self.min_p = widgets.FloatSlider(value=min_p, min=0.0, max=max(0.5, min_p), step=0.01,
                                         description="Min-p (0 off)", readout_format=".2f", **_SLIDER)
        self.max_new_tokens = None
        if max_new_tokens is not None:
            limit = new_tokens_limit(context)
            self.max_new_tokens = widgets.IntSlider(value=min(max(1, max_new_tokens), limit), min=1, max=limit,
                                                    description="New tokens", **_SLIDER)
        self.seed = widgets.IntText(value=seed, description="Seed", style={"description_width": "7.5em"},
                                    layout=widgets.Layout(width="14.5em"))  # six digits beside the spin arrows
        self.new_sample = widgets.Button(description="New sample", icon="dice", tooltip="draw a fresh random seed",
                                         layout=widgets.Layout(width="auto"))
        self.button = widgets.Button(description=button, button_style="primary", icon="play",
                                     layout=widgets.Layout(width="auto"))
        self.advanced = advanced_sliders(start) if sliders else {}
        orders = [("HF order", "hf"), ("llama.cpp order", "llama.cpp")]
        orders += [] if start.order in sampling.ORDERS else [("free order", start.order)]  # given by the caller
        self.order = widgets.ToggleButtons(options=orders, value=start.order, style={"button_width": "auto"},
                                           tooltip="llama.cpp applies temperature last")
        self.advanced_section = widgets.Accordion(  # scrolls inside, so the column stays within a 720 px screen
            children=[widgets.VBox([self.order, *self.advanced.values()],
                                   layout=widgets.Layout(max_height=ADVANCED_HEIGHT, overflow="auto"))],
            selected_index=None,
            layout=widgets.Layout(width="100%"))
        self.advanced_section.set_title(0, "Advanced samplers")
        self.new_sample.on_click(lambda _button: setattr(self.seed, "value", fresh_seed()))
        rows = [self.temperature, self.top_k, self.top_p, self.min_p, self.advanced_section] if sliders else []
        rows += [self.max_new_tokens] if self.max_new_tokens is not None else []
        rows += [widgets.HBox([self.seed, self.new_sample]), self.button]
        self.panel = widgets.VBox(rows, layout=widgets.Layout(width=COLUMN, min_width=COLUMN))

    @property
    def filters(self) -> list[widgets.Widget]:
        """The four main sampling sliders."""
        return [self.temperature, self.top_k, self.top_p, self.min_p]

    @property
    def sampler_controls(self) -> list[widgets.Widget]:
        """Every control that changes the settings: the four sliders, the advanced ones and the order."""
        return [*self.filters, *self.advanced.values(), self.order] if self.advanced else self.filters

    def settings(self) -> SamplingSettings:
        """The settings the sliders show (fields without a slider, such as a logit bias or DRY's
        breakers, as the controls started). Usage: ``controls.settings()``"""
        extra = {field: slider.value for field, slider in self.advanced.items()}
        return dataclasses.replace(self.start, temperature=float(self.temperature.value), top_k=int(self.top_k.value),
                                   top_p=float(self.top_p.value), min_p=float(self.min_p.value),
                                   order=self.order.value, **extra)


def settings_change(old: SamplingSettings | None, new: SamplingSettings) -> str:
    """What changed between two settings, e.g. ``"temperature 0.8 → 1.1"`` ("" when nothing did).

    Usage: ``settings_change(SamplingSettings(0.8), SamplingSettings(1.1))``
    """
    if old is None:
        return ""
    changes = [f"{field.title} {getattr(old, name):g} → {getattr(new, name):g}"
               for name, field in sampling.FIELDS.items() if getattr(old, name) != getattr(new, name)]
    return ", ".join(changes + ([f"order {old.order} → {new.order}"] if old.order != new.order else []))
