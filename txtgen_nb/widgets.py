"""Interactive notebook explorers for sampling: ipywidgets around ``generate`` and ``viz``.

Every explorer loads the bundled demo model when no model is given, shows its errors inside the
widget (one escaped line, never a traceback) and keeps its data (``.result``, ``.trace``) and child
widgets (``.prompt``, ``.temperature``, ``.step``, ``.plot``, ...) as attributes, so it can be
driven from code as well as by hand. ``.generate_calls`` counts the model calls.

Usage::

    from txtgen_nb.widgets import SamplingExplorer, DistributionExplorer, CompareExplorer, BranchExplorer
    SamplingExplorer(prompt="Once upon a time")          # last expression of a cell: shows the widget
    CompareExplorer(settings=[SamplingSettings(0.0, 0), SamplingSettings(1.2, 0)])
"""

from __future__ import annotations

import contextlib
import html
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import ipywidgets as widgets
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb import viz
from txtgen_nb.api import load_model_and_tokenizer
from txtgen_nb.generation import GenerationResult, SamplingSettings, Trace, generate, validate_settings
from txtgen_nb.model import Transformer
from txtgen_nb.tokenizer import decode, show_token

DEFAULT_PROMPT = "Once upon a time"
USER_ERRORS = (ValueError, FileNotFoundError, OSError)
_WIDE = {"description_width": "initial"}


def settings_label(settings: SamplingSettings) -> str:
    """A short label naming the active rules, e.g. ``"T=0.8 · top-k 50"``; ``"greedy"`` for T=0.

    Usage: ``settings_label(SamplingSettings(0.8, 50, 0.9))``
    """
    if settings.temperature <= 0:
        return "greedy"
    parts = [f"T={settings.temperature:g}"]
    if settings.top_k > 0:
        parts.append(f"top-k {settings.top_k}")
    if settings.top_p < 1:
        parts.append(f"top-p {settings.top_p:g}")
    if settings.min_p > 0:
        parts.append(f"min-p {settings.min_p:g}")
    return " · ".join(parts)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).splitlines()).strip() or type(err).__name__
    return html.escape(text)


class _Explorer:
    """Shared parts: model loading, the prompt/seed/button row, busy status, error box, display.

    Subclasses build their own widgets and call :meth:`_finish` with the rows to show.
    """

    def __init__(
        self,
        model: Transformer | None = None,
        params: nnx.State | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        checkpoint: str | Path | None = None,
        prompt: str = DEFAULT_PROMPT,
        seed: int = 0,
        button: str = "Generate",
    ) -> None:
        self.generate_calls = 0
        self.result: GenerationResult | None = None
        self.trace: Trace | None = None
        self.model, self.params, self.tokenizer = None, None, None
        self.prompt = widgets.Textarea(value=prompt, description="Prompt", continuous_update=False,
                                       layout=widgets.Layout(width="100%", height="4em"))
        self.seed = widgets.IntText(value=seed, description="Seed", layout=widgets.Layout(width="12em"))
        self.generate_button = widgets.Button(description=button, button_style="primary", icon="play")
        self.status = widgets.Label(value="")
        self.error = widgets.HTML(value="")
        self._muted = False
        self.generate_button.on_click(lambda _button: self._safely(self.run)())
        with self._errors_shown():
            self._load(model, params, tokenizer, checkpoint)
        self.generate_button.disabled = self.model is None

    # ----- loading, errors and busy state -------------------------------------------------------

    def _load(self, model: Transformer | None, params: nnx.State | None, tokenizer: Tokenizer | None,
              checkpoint: str | Path | None) -> None:
        given = [x is not None for x in (model, params, tokenizer)]
        if any(given) and not all(given):
            raise ValueError("pass model, params and tokenizer together (or none of them for the demo model)")
        if not any(given):
            model, params, tokenizer, _config = load_model_and_tokenizer(checkpoint)
        self.model, self.params, self.tokenizer = model, params, tokenizer

    @property
    def context_size(self) -> int:
        """The model's context length in tokens (128 when no model is loaded)."""
        return int(self.model.config.max_len) if self.model is not None else 128

    def show_error(self, err: BaseException | str) -> None:
        """Show one escaped line in the error box. Usage: ``explorer.show_error("bad value")``"""
        text = html.escape(err) if isinstance(err, str) else _one_line(err)
        self.error.value = f'<div style="color:#b00020;font-weight:bold">⚠ {text}</div>'

    @contextlib.contextmanager
    def _errors_shown(self, clear: bool = True) -> Iterator[None]:
        """Run the block and show a user error (bad path or setting) in the error box.

        ``clear`` empties the box first (each user action starts afresh; construction keeps earlier errors).
        """
        if clear:
            self.error.value = ""
        try:
            yield
        except USER_ERRORS as err:
            self.show_error(err)

    def _safely(self, fn: Callable[..., None]) -> Callable[..., None]:
        """A widget callback that shows user errors in the widget instead of raising them."""
        def callback(*args: Any) -> None:
            with self._errors_shown():
                fn(*args)
        return callback

    def _observe(self, widget: widgets.Widget, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when ``widget.value`` changes, unless the change comes from the explorer itself."""
        def on_change(_change: dict) -> None:
            if not self._muted:
                self._safely(fn)()
        widget.observe(on_change, names="value")

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """Set widget values without triggering the explorer's own observers."""
        self._muted = True
        try:
            yield
        finally:
            self._muted = False

    @contextlib.contextmanager
    def _busy(self, message: str = "Generating…") -> Iterator[None]:
        self.generate_button.disabled = True
        self.status.value = message
        try:
            yield
        finally:
            self.generate_button.disabled = self.model is None
            if self.status.value == message:
                self.status.value = ""

    def _generate(self, prompts: str | Sequence[str], **kwargs: Any) -> GenerationResult:
        """One counted model call (``generate`` with ``trace=True``) behind the busy indicator."""
        with self._busy():
            result = generate(self.model, self.params, self.tokenizer, prompts, trace=True, **kwargs)
            self.generate_calls += 1
        return result

    # ----- widget helpers ------------------------------------------------------------------------

    def _max_new_tokens_slider(self, value: int) -> widgets.IntSlider:
        limit = max(1, self.context_size - 1)  # the prompt holds at least the BOS token
        self.max_new_tokens = widgets.IntSlider(value=min(max(1, value), limit), min=1, max=limit,
                                                description="Max new tokens", continuous_update=False, style=_WIDE)
        return self.max_new_tokens

    def _step_slider(self) -> widgets.IntSlider:
        self.step = widgets.IntSlider(value=0, min=0, max=0, description="Step", continuous_update=False,
                                      style=_WIDE, layout=widgets.Layout(width="100%"))
        return self.step

    def _set_steps(self, count: int, keep: bool = True) -> None:
        """Let the step slider cover ``count`` steps, keeping the shown step when it still exists."""
        with self._quietly():
            self.step.max = max(0, count - 1)
            self.step.value = min(self.step.value, self.step.max) if keep else 0

    def _finish(self, *rows: widgets.Widget) -> None:
        """Build the root ``.widget``: the subclass's rows, then the error box."""
        self.widget = widgets.VBox([*rows, self.error], layout=widgets.Layout(width="100%"))

    def _button_row(self, *extra: widgets.Widget) -> widgets.HBox:
        return widgets.HBox([*extra, self.seed, self.generate_button, self.status])

    def run(self) -> None:
        """Run the model with the current prompt and settings (what the button does)."""
        raise NotImplementedError

    def _start(self) -> None:
        """The first run at construction, keeping any error shown so far."""
        if self.model is not None:
            with self._errors_shown(clear=False):
                self.run()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)


class _TunableExplorer(_Explorer):
    """An explorer with the shared temperature / top-k / top-p / min-p slider panel (``.panel``)."""

    def __init__(self, model: Transformer | None, params: nnx.State | None, tokenizer: Tokenizer | None, *,
                 temperature: float, top_k: int, top_p: float, min_p: float, **kwargs: Any) -> None:
        super().__init__(model, params, tokenizer, **kwargs)
        self.panel = self._sampling_sliders(temperature, top_k, top_p, min_p)

    def _sampling_sliders(self, temperature: float, top_k: int, top_p: float, min_p: float) -> widgets.Widget:
        """Create ``.temperature``, ``.top_k``, ``.top_p``, ``.min_p`` (act on release) and their panel."""
        try:
            validate_settings(temperature, top_k, top_p, min_p)
        except ValueError as err:  # a bad starting value: keep the defaults, the error box says why
            self.show_error(err)
            temperature, top_k, top_p, min_p = 0.8, 50, 1.0, 0.0
        common = dict(continuous_update=False, style=_WIDE)
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=max(2.0, temperature), step=0.05,
                                               description="Temperature", **common)
        self.top_k = widgets.IntSlider(value=top_k, min=0, max=max(100, int(top_k)), description="Top-k (0 = off)",
                                       **common)
        self.top_p = widgets.FloatSlider(value=top_p, min=0.0, max=1.0, step=0.01, description="Top-p",
                                         readout_format=".2f", **common)
        self.min_p = widgets.FloatSlider(value=min_p, min=0.0, max=max(0.5, min_p), step=0.01,
                                         description="Min-p (0 = off)", readout_format=".2f", **common)
        return widgets.HBox([widgets.VBox([self.temperature, self.top_k]), widgets.VBox([self.top_p, self.min_p])])

    def _filter_sliders(self) -> list[widgets.Widget]:
        return [self.temperature, self.top_k, self.top_p, self.min_p]

    def settings(self) -> SamplingSettings:
        """The sampling settings the sliders show. Usage: ``explorer.settings()``"""
        return SamplingSettings(temperature=float(self.temperature.value), top_k=int(self.top_k.value),
                                top_p=float(self.top_p.value), min_p=float(self.min_p.value))

    def _sample(self, prompt: str, max_new_tokens: int) -> GenerationResult:
        """One counted model call with the sliders' settings and the seed."""
        return self._generate(prompt, max_new_tokens=max_new_tokens, settings=self.settings(),
                              seed=int(self.seed.value))


class SamplingExplorer(_TunableExplorer):
    """Generate a continuation, see it coloured by probability and walk through its sampling steps.

    The step view shows the next-token distribution at the chosen step, before (after temperature)
    and after the filters. Moving temperature, top-k, top-p or min-p first re-filters the shown step
    from the stored trace logits (no model call, instant), then regenerates the continuation with the
    new settings (untick ``.auto_regenerate`` to study one fixed generation). All sliders use
    ``continuous_update=False``: they act when released, so dragging never queues dozens of model
    calls and plot renders and the notebook never freezes. Generation runs synchronously in the
    callback; "Generating…" shows and the button is disabled meanwhile.

    Usage: ``SamplingExplorer(prompt="Once upon a time", max_new_tokens=40)``
    """

    def __init__(
        self,
        model: Transformer | None = None,
        params: nnx.State | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        checkpoint: str | Path | None = None,
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = 40,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(model, params, tokenizer, checkpoint=checkpoint, prompt=prompt, seed=seed,
                         temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        self._max_new_tokens_slider(max_new_tokens)
        self.auto_regenerate = widgets.Checkbox(value=True, description="Regenerate when a slider moves",
                                                indent=False)
        self.view = widgets.ToggleButtons(options=[("Before/after", "step"), ("Pipeline stages", "pipeline")],
                                          value="step", style={"button_width": "9em"})
        self.color_by = widgets.Dropdown(options=["probability", "rank", "entropy"], value="probability",
                                         description="Colour by", layout=widgets.Layout(width="16em"))
        self.text_html = widgets.HTML(value="")
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self._step_slider()
        for slider in self._filter_sliders():
            self._observe(slider, self._on_filter_change)
        self._observe(self.color_by, self.show_text)
        for control in (self.seed, self.max_new_tokens):
            self._observe(control, self.run)
        self._observe(self.step, self.show_step)
        self._observe(self.view, self.show_step)
        self._finish(self.prompt, self.panel, widgets.HBox([self.max_new_tokens, self.auto_regenerate]),
                     self._button_row(), self.color_by, self.text_html, self.step, self.view, self.plot)
        self._start()

    def run(self) -> None:
        """Generate with the prompt and the sliders' settings, then show the text and the step."""
        if self.model is None:
            return
        self.result = self._sample(self.prompt.value, int(self.max_new_tokens.value))
        self.trace = self.result.trace
        self._set_steps(int(self.trace.lengths[0]))
        self.status.value = (f"{len(self.result.new_token_ids[0])} new tokens, "
                             f"stopped at {self.result.stop_reasons[0].replace('_', ' ')}")
        self.show_text()
        self.show_step()

    def _on_filter_change(self) -> None:
        self.show_text()  # the stored logits re-filtered with the new settings: no model call
        self.show_step()
        if self.auto_regenerate.value:
            self.run()

    def show_text(self) -> None:
        """Colour the generated text with the sliders' settings (no model call)."""
        if self.trace is not None:
            self.text_html.value = viz.colored_text(self.trace, self.tokenizer, color_by=self.color_by.value,
                                                    settings=self.settings()).html

    def current_step_data(self) -> viz.StepData:
        """``viz.step_data`` for the shown step with the sliders' settings (no model call)."""
        if self.trace is None:
            raise ValueError("nothing generated yet")
        return viz.step_data(self.trace, self.tokenizer, int(self.step.value), settings=self.settings())

    def show_step(self) -> None:
        """Draw the shown step with the sliders' settings from the stored logits (no model call)."""
        if self.trace is None:
            return
        view = viz.pipeline_view if self.view.value == "pipeline" else viz.step_view
        figure = view(self.trace, self.tokenizer, int(self.step.value), settings=self.settings())
        self.plot.value = viz.figure_to_png(figure)


class DistributionExplorer(_TunableExplorer):
    """The next-token distribution after a prompt, before and after filtering, live as sliders move.

    A prompt change (or the button) runs the model once (one step, logits kept); the sliders only
    re-filter those logits, so they never call the model. Sliders act on release
    (``continuous_update=False``) to keep the notebook responsive.

    Usage: ``DistributionExplorer(prompt="The cat sat on the", top_n=25)``
    """

    def __init__(
        self,
        model: Transformer | None = None,
        params: nnx.State | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        checkpoint: str | Path | None = None,
        prompt: str = DEFAULT_PROMPT,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 1.0,
        min_p: float = 0.0,
        top_n: int = 20,
    ) -> None:
        super().__init__(model, params, tokenizer, checkpoint=checkpoint, prompt=prompt, button="Predict next token",
                         temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        self.top_n = top_n
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        for slider in self._filter_sliders():
            self._observe(slider, self.show)
        self._observe(self.prompt, self.run)
        self._finish(self.prompt, self.panel, widgets.HBox([self.generate_button, self.status]), self.plot)
        self._start()

    def run(self) -> None:
        """Run the model one step on the prompt and keep the logits."""
        if self.model is None:
            return
        self.result = self._generate(self.prompt.value, max_new_tokens=1, seed=int(self.seed.value))
        self.trace = self.result.trace
        self.show()

    def logits(self) -> np.ndarray:
        """The raw next-token logits after the prompt ``[vocab]``."""
        if self.trace is None:
            raise ValueError("nothing computed yet")
        return self.trace.logits[0, 0]

    def current_step_data(self) -> viz.StepData:
        """``viz.step_data`` of the next token with the sliders' settings (no model call)."""
        if self.trace is None:
            raise ValueError("nothing computed yet")
        return viz.step_data(self.trace, self.tokenizer, 0, settings=self.settings(), top_n=self.top_n)

    def show(self) -> None:
        """Redraw the before/after distribution with the sliders' settings (no model call)."""
        if self.trace is None:
            return
        title = f"Next token after “{self.prompt.value[-40:]}”"
        figure = viz.distribution_view(self.logits(), self.tokenizer, self.settings(), title=title, top_n=self.top_n)
        self.plot.value = viz.figure_to_png(figure)


DEFAULT_COMPARE = (SamplingSettings(0.0, 0), SamplingSettings(0.8, 50), SamplingSettings(1.5, 0))


class CompareExplorer(_Explorer):
    """The same prompt and seed under 2 to 4 sampling settings side by side, in one batched call.

    Shows a row of coloured texts and the per-step timeline (probability of each chosen token,
    entropy, tokens kept) of every setting. ``max_new_tokens`` acts on release.

    Usage: ``CompareExplorer(settings=[SamplingSettings(0.0, 0), SamplingSettings(1.2, 0, top_p=0.9)])``
    """

    def __init__(
        self,
        model: Transformer | None = None,
        params: nnx.State | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        checkpoint: str | Path | None = None,
        prompt: str = DEFAULT_PROMPT,
        settings: Sequence[SamplingSettings] = DEFAULT_COMPARE,
        max_new_tokens: int = 40,
        seed: int = 0,
    ) -> None:
        super().__init__(model, params, tokenizer, checkpoint=checkpoint, prompt=prompt, seed=seed)
        self.compared = list(settings)
        self._max_new_tokens_slider(max_new_tokens)
        self.text_html = widgets.HTML(value="")
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        for control in (self.seed, self.max_new_tokens):
            self._observe(control, self.run)
        self._finish(self.prompt, self._button_row(self.max_new_tokens), self.text_html, self.plot)
        if 2 <= len(self.compared) <= 4 and all(isinstance(s, SamplingSettings) for s in self.compared):
            self._start()
        else:
            self.show_error(f"settings must be 2 to 4 SamplingSettings, got {len(self.compared)} values")

    @property
    def labels(self) -> list[str]:
        """One label per compared setting, e.g. ``["greedy", "T=0.8 · top-k 50"]``."""
        return [settings_label(s) for s in self.compared]

    def run(self) -> None:
        """Generate every setting in one batched call (same prompt, same seed per row)."""
        if self.model is None or not 2 <= len(self.compared) <= 4:
            return
        self.result = self._generate(self.prompt.value, settings=self.compared,
                                     seed=[int(self.seed.value)] * len(self.compared),
                                     max_new_tokens=int(self.max_new_tokens.value))
        self.trace = self.result.trace
        columns = "".join(
            f'<div style="flex:1;min-width:14em;padding:0 0.5em;border-left:3px solid #ddd">'
            f"<b>{html.escape(label)}</b>{viz.colored_text(self.trace, self.tokenizer, row=row).html}</div>"
            for row, label in enumerate(self.labels))
        self.text_html.value = f'<div style="display:flex;gap:0.5em;align-items:flex-start">{columns}</div>'
        self.plot.value = viz.figure_to_png(viz.timeline_view(self.trace, labels=self.labels))


class BranchExplorer(_TunableExplorer):
    """Generate, pick a step, and continue from one of the other tokens the model could have chosen.

    The dropdown lists the most likely tokens at the shown step (with their probability before →
    after filtering); "Continue from here" generates a branch from the context up to that step plus
    the chosen token, with the sliders' settings. Here the sliders re-filter the shown step and set
    the settings of the next generation or branch, but do not regenerate (that would discard the
    text being explored). Sliders act on release (``continuous_update=False``).

    Usage: ``BranchExplorer(prompt="Once upon a time", max_new_tokens=30)``
    """

    def __init__(
        self,
        model: Transformer | None = None,
        params: nnx.State | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        checkpoint: str | Path | None = None,
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = 30,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int = 0,
        alternatives: int = 10,
    ) -> None:
        super().__init__(model, params, tokenizer, checkpoint=checkpoint, prompt=prompt, seed=seed,
                         temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        self.num_alternatives = alternatives
        self.branch_result: GenerationResult | None = None
        self._max_new_tokens_slider(max_new_tokens)
        self.text_html = widgets.HTML(value="")
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self._step_slider()
        self.alternative = widgets.Dropdown(options=[], description="Instead choose", style=_WIDE,
                                            layout=widgets.Layout(width="28em"))
        self.branch_button = widgets.Button(description="Continue from here", icon="code-branch")
        self.branch_button.on_click(lambda _button: self._safely(self.branch)())
        self.branch_html = widgets.HTML(value="")
        for slider in self._filter_sliders():
            self._observe(slider, self.show_step)
        self._observe(self.step, self.show_step)
        self._finish(self.prompt, self.panel, self._button_row(self.max_new_tokens), self.text_html, self.step,
                     self.plot, widgets.HBox([self.alternative, self.branch_button]), self.branch_html)
        self._start()

    def run(self) -> None:
        """Generate the main text with the prompt and the sliders' settings."""
        if self.model is None:
            return
        self.result = self._sample(self.prompt.value, int(self.max_new_tokens.value))
        self.trace = self.result.trace
        self.branch_result, self.branch_html.value = None, ""
        self.text_html.value = viz.colored_text(self.trace, self.tokenizer).html
        self._set_steps(int(self.trace.lengths[0]), keep=False)
        self.show_step()

    def current_step_data(self) -> viz.StepData:
        """``viz.step_data`` for the shown step with the sliders' settings (no model call)."""
        if self.trace is None:
            raise ValueError("nothing generated yet")
        return viz.step_data(self.trace, self.tokenizer, int(self.step.value), settings=self.settings(),
                             top_n=self.num_alternatives)

    def show_step(self) -> None:
        """Draw the shown step and list its most likely tokens as alternatives (no model call)."""
        if self.trace is None:
            return
        step = int(self.step.value)
        self.plot.value = viz.figure_to_png(viz.step_view(self.trace, self.tokenizer, step, settings=self.settings()))
        data = self.current_step_data()
        options = []
        for token, label, before, after, kept in zip(data.ids, data.labels, data.prob_before, data.prob_after,
                                                     data.kept):
            mark = " (chosen)" if int(token) == data.chosen else "" if kept else " (filtered out)"
            options.append((f"{label}  {before:.1%} → {after:.1%}{mark}", int(token)))
        self.alternative.options = options
        others = [value for _, value in options if value != data.chosen]
        self.alternative.value = others[0] if others else (options[0][1] if options else None)

    def branch_prompt(self, step: int, token_id: int) -> str:
        """The text of the context before ``step`` plus ``token_id`` (BOS dropped)."""
        return decode(self.tokenizer, [*self.trace.context_ids(0, step), int(token_id)])

    def branch(self, token_id: int | None = None, step: int | None = None) -> None:
        """Continue from the context up to ``step`` plus ``token_id`` (default: the shown step and dropdown)."""
        if self.trace is None:
            raise ValueError("generate first, then choose a step and an alternative")
        step = int(self.step.value if step is None else step)
        token_id = self.alternative.value if token_id is None else int(token_id)
        if token_id is None:
            raise ValueError("choose an alternative token first")
        piece = show_token(self.tokenizer, token_id)
        if token_id == self.trace.eos_id:
            self.branch_result = None
            self.branch_html.value = f"<i>Branch at step {step}: {html.escape(piece)} ends the text here.</i>"
            return
        remaining = max(1, int(self.max_new_tokens.value) - step - 1)  # about as long as the main text
        self.branch_result = self._sample(self.branch_prompt(step, token_id), remaining)
        chosen = show_token(self.tokenizer, int(self.trace.token_ids[0, step]))
        header = (f"<b>Branch at step {step}:</b> <code>{html.escape(piece)}</code> instead of "
                  f"<code>{html.escape(chosen)}</code>")
        self.branch_html.value = header + viz.colored_text(self.branch_result.trace, self.tokenizer).html


__all__ = ["BranchExplorer", "CompareExplorer", "DistributionExplorer", "SamplingExplorer", "settings_label"]
