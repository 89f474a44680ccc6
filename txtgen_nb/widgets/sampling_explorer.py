"""SamplingExplorer: generate, see the text coloured by probability and walk through its steps."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb import viz
from txtgen_nb.generation import GenerationResult, SamplingSettings
from txtgen_nb.steps import most_informative_step
from txtgen_nb.widgets.base import DEFAULT_PROMPT, Explorer
from txtgen_nb.widgets.controls import SamplingControls, settings_change
from txtgen_nb.widgets.layout import explorer_row, plot_image, step_row
from txtgen_nb.widgets.token_text import TokenText


MIN_CHOICE_NATS = 0.05  # below this raw entropy the model was all but certain: a step not worth staying on


class SamplingExplorer(Explorer):
    """Generate a continuation, see it coloured by probability and walk through its sampling steps.

    The plot shows the shown step's next-token distribution before (after temperature) and after
    the filters. Click a token (or move **Step**) to show its step. Moving a sampling slider
    re-filters the shown step from the stored logits (no model call), then regenerates with the
    new settings (untick ``.auto_regenerate`` to study one fixed text); the tokens that changed are
    underlined and counted, and when none changed the explorer says why (same seed, same random
    draws). **New sample** draws a fresh seed. Sliders act on release.

    Usage: ``SamplingExplorer(prompt="Once upon a time", max_new_tokens=40)``
    """

    def __init__(
        self,
        model: nnx.Module | None = None,
        params: nnx.State | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        checkpoint: str | Path | None = None,
        chat: bool = False,
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = 40,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(model, params, tokenizer, checkpoint=checkpoint, chat=chat)
        c = self.adopt(SamplingControls(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed,
                                        max_new_tokens=max_new_tokens, context=self.context_size), prompt)
        self.auto_regenerate = widgets.Checkbox(value=True, description="Regenerate when a slider moves",
                                                indent=False)
        self.text = TokenText()
        self.step = widgets.IntSlider(value=0, min=0, max=0, description="Step", continuous_update=False,
                                      style={"description_width": "3em"}, layout=widgets.Layout(flex="1 1 auto"))
        self.view = widgets.ToggleButtons(options=[("Before/after", "step"), ("Pipeline", "pipeline")],
                                          value="step", style={"button_width": "auto"})
        self.color_by = widgets.Dropdown(options=["probability", "rank", "entropy"], value="probability",
                                         description="Colour by", style={"description_width": "7.5em"},
                                         layout=widgets.Layout(width="100%"))
        self.plot = plot_image()
        self.step_plot = viz.StepPlot(self.top_n, height=3.4)
        self._previous: tuple[list[int], SamplingSettings, int, str, int, bool] | None = None
        self._summary = ""
        self.changed = None  # [N] bool: tokens that differ from the previous generation
        self.widget = explorer_row(
            [self.prompt_area, c.panel, self.auto_regenerate, self.color_by, self.status_bar],
            [self.text, step_row(self.step, self.view), self.plot], self.error)
        self._wire()
        self.start()

    def _wire(self) -> None:
        self.generate_button.on_click(lambda _button: self.safely(self.run)())
        for slider in self.controls.sampler_controls:
            self.observe(slider, self._on_filter_change)
        for control in (self.seed, self.max_new_tokens, self.prompt):
            self.observe(control, self.run)
        self.observe(self.color_by, self.show_text)
        self.observe(self.step, self.show_step)
        self.observe(self.view, self.show_step)
        self.observe(self.truth, self.show_step)
        self.observe(self.text, self._on_token_click, name="selected")

    @property
    def shown_step(self) -> int:
        return int(self.step.value)

    def run(self) -> None:
        """Generate with the prompt, the sliders' settings and the seed; show what changed."""
        if not self.ready:
            return
        settings, seed, length = self.settings(), int(self.seed.value), int(self.max_new_tokens.value)
        self.generate(self.prompt.value, then=lambda result: self._show_result(result, settings, seed, length),
                      max_new_tokens=length, settings=settings, seed=seed)

    def _show_result(self, result: GenerationResult, settings: SamplingSettings, seed: int, length: int) -> None:
        first = self.trace is None
        self.result, self.trace = result, result.trace
        ids = result.new_token_ids[0]
        previous = self._previous
        comparable = previous is not None and (previous[3], previous[5]) == (self.prompt.value, self.chat_on)
        self.changed = viz.changed_tokens(previous[0], ids) if comparable else None  # same prompt only
        self._summary = self._change_summary(ids, settings, seed, length)
        self._previous = (ids, settings, seed, self.prompt.value, length, self.chat_on)
        with self.quietly():
            self.step.max = max(0, int(self.trace.lengths[0]) - 1)
            if first or not self._still_informative(int(self.step.value)):
                self.step.value = most_informative_step(self.trace, settings=settings)
        self.show_text()
        self.show_step()

    def _still_informative(self, step: int) -> bool:
        """Whether the new text still has ``step`` and the model had a choice there (raw entropy at
        least ``MIN_CHOICE_NATS``): then a regeneration stays on it, else moves to the most informative."""
        return step < int(self.trace.lengths[0]) and float(self.trace.entropy[0, step]) >= MIN_CHOICE_NATS

    def show_live(self, prompts: list[str], texts: list[str]) -> None:
        self.text.html = viz.live_html(prompts[0], texts[0])

    def reset(self) -> None:
        self._previous, self.changed, self._summary = None, None, ""

    def _change_summary(self, ids: list[int], settings: SamplingSettings, seed: int, length: int) -> str:
        if self.changed is None:  # nothing comparable before (a first run, a new prompt or chat toggled)
            return viz.change_summary(None, ids) + " Hover or tap a token for its alternatives; click it to show its step."
        old_ids, old_settings, old_seed, _prompt, old_length, _chat = self._previous
        causes = [settings_change(old_settings, settings)]
        causes.append(f"seed {old_seed} → {seed}" if seed != old_seed else "")
        causes.append(f"length {old_length} → {length}" if length != old_length else "")
        summary = viz.change_summary(old_ids, ids, ", ".join(c for c in causes if c),
                                     greedy=old_settings.is_greedy() and settings.is_greedy())
        return summary + (" They are underlined in vermillion." if self.changed.any() else "")

    def _on_filter_change(self) -> None:
        self.show_text()  # the stored logits re-filtered with the new settings: no model call
        self.show_step()
        if self.auto_regenerate.value:
            self.run()

    def _on_token_click(self) -> None:
        if 0 <= self.text.selected <= self.step.max:
            self.step.value = self.text.selected

    def show_text(self) -> None:
        """Colour the text with the sliders' settings, mark the changed tokens and the shown step."""
        if self.trace is None:
            return
        data = viz.text_data(self.trace, self.tokenizer, color_by=self.color_by.value, settings=self.settings())
        self.text.html = viz.token_html(data, changed=self.changed, summary=self._summary)
        with self.quietly():
            self.text.selected = self.shown_step

    def show_step(self) -> None:
        """Draw the shown step with the sliders' settings from the stored logits (no model call)."""
        if self.trace is None:
            return
        with self.quietly():
            self.text.selected = self.shown_step
        if self.view.value == "pipeline":
            with self.busy("Drawing…"):
                figure = viz.pipeline_view(self.trace, self.tokenizer, self.shown_step, settings=self.settings(),
                                           width=7.8, oracle=self.oracle)
                self.plot.value = viz.figure_to_png(figure)
        else:
            self.plot.value = self.step_plot.png(self.step_data())
