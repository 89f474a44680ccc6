"""DistributionExplorer: the next-token distribution after a prompt, re-filtered live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb import viz
from txtgen_nb.generation import GenerationResult
from txtgen_nb.widgets.base import DEFAULT_PROMPT, Explorer
from txtgen_nb.widgets.controls import SamplingControls
from txtgen_nb.widgets.layout import explorer_row, plot_image


class DistributionExplorer(Explorer):
    """The next-token distribution after a prompt, before and after filtering, as sliders move.

    A prompt change (or the button) runs the model once (one step, logits kept); the sliders only
    re-filter those logits, so they never call the model. Sliders act on release.

    Usage: ``DistributionExplorer(prompt="The cat sat on the", top_n=20)``
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
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 1.0,
        min_p: float = 0.0,
        top_n: int = 20,
    ) -> None:
        super().__init__(model, params, tokenizer, checkpoint=checkpoint, chat=chat)
        self.top_n = top_n
        c = self.adopt(SamplingControls(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                        button="Predict next token"), prompt)
        c.seed.layout.display = c.new_sample.layout.display = "none"  # one step: the seed plays no part
        self.plot = plot_image()
        self.step_plot = viz.StepPlot(top_n, height=4.2)
        self.widget = explorer_row([self.prompt_area, c.panel, self.status_bar], [self.plot], self.error)
        self.generate_button.on_click(lambda _button: self.safely(self.run)())
        for slider in c.sampler_controls:
            self.observe(slider, self.show)
        self.observe(self.prompt, self.run)
        self.observe(self.truth, self.show)
        self.start()

    def run(self) -> None:
        """Run the model one step on the prompt and keep the logits."""
        if not self.ready:
            return
        self.generate(self.prompt.value, then=self._show_result, max_new_tokens=1, settings=self.settings())

    def _show_result(self, result: GenerationResult) -> None:
        self.result, self.trace = result, result.trace
        self.show()

    def logits(self) -> np.ndarray:
        """The raw next-token logits after the prompt ``[vocab]``."""
        if self.trace is None:
            raise ValueError("nothing computed yet")
        return self.trace.step_logits(0, 0)

    def show(self) -> None:
        """Redraw the before/after distribution with the sliders' settings (no model call)."""
        if self.trace is None:
            return
        data = self.step_data()
        title = (f"next token after “{viz.tail(self.prompt.value, 40)}”\n{data.settings.label()}: "
                 f"kept {data.num_kept:,} of {data.vocab_size:,}; entropy {data.entropy_before:.2f} → "
                 f"{data.entropy_after:.2f} nats")
        self.plot.value = self.step_plot.png(data, title)

    def step_data(self) -> viz.StepData:
        """``viz.distribution_data`` of the next token with the sliders' settings (no model call), the
        grammar's ✓ / ✗ on each candidate when asked (**Mark what the grammar allows**)."""
        valid = None if self.oracle is None else set(self.oracle(self.tokenizer, self.prompt.value))
        return viz.distribution_data(self.logits(), self.tokenizer, self.settings(), top_n=self.top_n, valid=valid)
