"""CompareExplorer: one prompt and seed under 2 to 4 sampling settings, side by side."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import ipywidgets as widgets
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb import viz
from txtgen_nb.generation import GenerationResult, SamplingSettings
from txtgen_nb.widgets.base import DEFAULT_PROMPT, Explorer
from txtgen_nb.widgets.controls import SamplingControls
from txtgen_nb.widgets.layout import explorer_row, plot_image

DEFAULT_COMPARE = (SamplingSettings(0.0, 0), SamplingSettings(0.8, 50), SamplingSettings(1.5, 0))


class CompareExplorer(Explorer):
    """The same prompt and seed under 2 to 4 sampling settings side by side, in one batched call.

    Shows a column of coloured text per setting (hover or tap a token for its alternatives) and
    the per-step timeline of every setting. Every row uses the same seed, so where two settings
    agree on a token they drew it from the same random numbers; **New sample** draws a fresh seed.

    Usage: ``CompareExplorer(settings=[SamplingSettings(0.0, 0), SamplingSettings(1.2, 0, top_p=0.9)])``
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
        settings: Sequence[SamplingSettings] = DEFAULT_COMPARE,
        max_new_tokens: int = 40,
        seed: int = 0,
    ) -> None:
        super().__init__(model, params, tokenizer, checkpoint=checkpoint, chat=chat)
        self.compared = list(settings)
        self._previous: list[int] | None = None  # the last token ids of every row, padded with -1
        c = self.adopt(SamplingControls(seed=seed, max_new_tokens=max_new_tokens, context=self.context_size,
                                        sliders=False), prompt)
        self.text_html = widgets.HTML(value="")
        self.plot = plot_image()
        self.widget = explorer_row([self.prompt_area, c.panel, self.status_bar], [self.text_html, self.plot], self.error)
        self.generate_button.on_click(lambda _button: self.safely(self.run)())
        for control in (self.seed, self.max_new_tokens, self.prompt):
            self.observe(control, self.run)
        if 2 <= len(self.compared) <= 4 and all(isinstance(s, SamplingSettings) for s in self.compared):
            self.start()
        else:
            self.show_error(f"settings must be 2 to 4 SamplingSettings, got {len(self.compared)} values")

    def reset(self) -> None:
        self._previous = None

    @property
    def labels(self) -> list[str]:
        """One label per compared setting, e.g. ``["greedy", "T=0.8 · top-k 50"]``."""
        return [s.label() for s in self.compared]

    def run(self) -> None:
        """Generate every setting in one batched call (same prompt, same seed per row)."""
        if not self.ready or not 2 <= len(self.compared) <= 4:
            return
        length = int(self.max_new_tokens.value)
        self.generate(self.prompt.value, then=lambda result: self._show_result(result, length), settings=self.compared,
                      seed=[int(self.seed.value)] * len(self.compared), max_new_tokens=length)

    def show_live(self, prompts: list[str], texts: list[str]) -> None:
        self.text_html.value = viz.columns_html([(label, viz.live_html(prompt, text))
                                                 for label, prompt, text in zip(self.labels, prompts, texts)])

    def _show_result(self, result: GenerationResult, length: int) -> None:
        self.result, self.trace = result, result.trace
        rows = [ids + [-1] * (length - len(ids)) for ids in result.new_token_ids]
        flat = [token for row in rows for token in row]
        summary = viz.change_summary(self._previous, [t for t in flat if t >= 0] if self._previous is None else flat)
        self._previous = flat
        with self.busy("Drawing…"):
            data = [viz.text_data(self.trace, self.tokenizer, row) for row in range(len(self.labels))]
            legend = viz.color_legend_html(data[0], settings_label="after each column's own filtering")
            self.text_html.value = f'<div class="tg-summary">{html.escape(summary)}</div>' + legend + viz.columns_html([
                (label, viz.token_html(d, panel="below", legend=False)) for label, d in zip(self.labels, data)])
            self.plot.value = viz.figure_to_png(viz.timeline_view(self.trace, labels=self.labels, width=7.8))
