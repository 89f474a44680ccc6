"""BranchExplorer: pick a step, choose another token, and see where the text would have gone."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb import viz
from txtgen_nb.generation import GenerationResult
from txtgen_nb.steps import most_informative_step
from txtgen_nb.tokenizer import decode, show_token, shown_prompt, special_tokens
from txtgen_nb.widgets.base import DEFAULT_PROMPT, Explorer
from txtgen_nb.widgets.controls import SamplingControls
from txtgen_nb.widgets.layout import explorer_row, plot_image, step_row
from txtgen_nb.widgets.token_text import TokenText


class BranchExplorer(Explorer):
    """Generate, pick a step, and continue from one of the other tokens the model could have chosen.

    Click a token (or move **Step**); the menu lists that step's candidates, the ones the filters
    keep first (probability before → after filtering), removed ones marked. By default it offers
    the most likely kept token other than the sampled one. **Continue from here** generates
    **New tokens** more tokens from the context up to that step plus the chosen token, with the
    sliders' settings and seed, and shows the original and the branch side by side, their
    differences underlined. The sliders re-filter the shown step but do not regenerate (that
    would discard the text being explored).

    Usage: ``BranchExplorer(prompt="Once upon a time", max_new_tokens=30)``
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
        max_new_tokens: int = 30,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int = 0,
        alternatives: int = 10,
    ) -> None:
        super().__init__(model, params, tokenizer, checkpoint=checkpoint, chat=chat)
        self.top_n = alternatives
        self.branch_result: GenerationResult | None = None
        self._branching: tuple[int, str, str] | None = None  # (step, piece, sampled) while a branch generates
        c = self.adopt(SamplingControls(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed,
                                        max_new_tokens=max_new_tokens, context=self.context_size), prompt)
        self.text = TokenText()
        self.step = widgets.IntSlider(value=0, min=0, max=0, description="Step", continuous_update=False,
                                      style={"description_width": "3em"}, layout=widgets.Layout(flex="1 1 auto"))
        self.plot = plot_image()
        self.step_plot = viz.StepPlot(self.top_n, height=3.3)
        self.alternative = widgets.Dropdown(options=[], description="Branch with",  # the free width: no choice cut
                                            style={"description_width": "6.5em"},
                                            layout=widgets.Layout(flex="1 1 auto", width="auto", min_width="18em"))
        self.branch_button = widgets.Button(description="Continue from here", icon="code-branch",
                                            button_style="info", layout=widgets.Layout(width="auto"))
        self.branch_html = widgets.HTML(value="")
        self.busy_targets.append(self.branch_button)
        self.widget = explorer_row(
            [self.prompt_area, c.panel, self.status_bar],
            [self.text, step_row(self.step), self.plot, step_row(self.alternative, self.branch_button)],
            self.branch_html, self.error)
        self._wire()
        self.start()

    def _wire(self) -> None:
        self.generate_button.on_click(lambda _button: self.safely(self.run)())
        self.branch_button.on_click(lambda _button: self.safely(self.branch)())
        for slider in self.controls.sampler_controls:
            self.observe(slider, self.show_step)
        self.observe(self.seed, self.run)
        self.observe(self.step, self.show_step)
        self.observe(self.truth, self.show_step)
        self.observe(self.text, self._on_token_click, name="selected")

    @property
    def shown_step(self) -> int:
        return int(self.step.value)

    def run(self) -> None:
        """Generate the main text with the prompt, the sliders' settings and the seed."""
        if not self.ready:
            return
        self._branching = None
        self.generate(self.prompt.value, then=self._show_result, max_new_tokens=int(self.max_new_tokens.value),
                      settings=self.settings(), seed=int(self.seed.value))

    def show_live(self, prompts: list[str], texts: list[str]) -> None:
        if self._branching is None:
            self.text.html = viz.live_html(prompts[0], texts[0])
        else:
            self.branch_html.value = viz.branch_html(*self._branching, [("Branch, as it is generated",
                                                                         viz.live_html(prompts[0], texts[0]))])

    def _show_result(self, result: GenerationResult) -> None:
        self.result, self.trace = result, result.trace
        self.branch_result, self.branch_html.value = None, ""
        self.text.html = viz.token_html(viz.text_data(self.trace, self.tokenizer),
                                        summary="Click a token to branch there.")
        with self.quietly():
            self.step.max = max(0, int(self.trace.lengths[0]) - 1)
            self.step.value = most_informative_step(self.trace)
        self.show_step()

    def _on_token_click(self) -> None:
        if 0 <= self.text.selected <= self.step.max:
            self.step.value = self.text.selected

    def alternatives(self) -> list[tuple[str, int]]:
        """The shown step's candidates as ``(label, token id)``: kept ones first, removed ones marked, and
        the grammar's ✓ / ✗ first when asked (**Mark what the grammar allows**)."""
        data = self.step_data()
        truth = [""] * len(data.ids) if data.valid is None else ["✓ " if v else "✗ " for v in data.valid]
        rows = list(zip(data.ids.tolist(), data.labels, data.prob_before, data.prob_after, data.kept, truth))
        rows.sort(key=lambda row: not row[4])  # stable: kept first, each group by raw logit
        return [(f"{mark}{label}  {before:.1%} → {after:.1%}" + (" (sampled)" if token == data.chosen else "")
                 + ("" if kept else "  ✗ removed"), token)
                for token, label, before, after, kept, mark in rows]

    def default_alternative(self) -> int | None:
        """The most likely kept token other than the sampled one (else the most likely other token)."""
        data = self.step_data()
        others = [(not kept, -after, token) for token, after, kept in zip(data.ids.tolist(), data.prob_after,
                                                                            data.kept) if token != data.chosen]
        return min(others)[2] if others else None

    def show_step(self) -> None:
        """Draw the shown step and list its candidates (no model call)."""
        if self.trace is None:
            return
        with self.quietly():
            self.text.selected = self.shown_step
        self.plot.value = self.step_plot.png(self.step_data())
        self.alternative.options = self.alternatives()
        self.alternative.value = self.default_alternative()

    def reset(self) -> None:
        self.branch_result, self.branch_html.value = None, ""

    def branch_prompt(self, step: int, token_id: int) -> str:
        """The text of the context before ``step`` plus ``token_id``: BOS dropped (generation adds
        it again), a chat template's markers kept (the branch continues the same turn)."""
        ids = [*self.trace.context_ids(0, step), int(token_id)]
        bos = special_tokens(self.tokenizer).bos
        if self.trace.templated:
            return shown_prompt(self.tokenizer, ids[1:] if bos is not None and ids[0] == bos else ids, templated=True)
        return decode(self.tokenizer, ids)

    def branch(self, token_id: int | None = None, step: int | None = None) -> None:
        """Continue from the context up to ``step`` plus ``token_id`` for **New tokens** tokens
        (default: the shown step and the menu's token), and show both texts side by side."""
        if self.trace is None:
            raise ValueError("generate first, then choose a step and an alternative")
        step = self.shown_step if step is None else int(step)
        token_id = self.alternative.value if token_id is None else int(token_id)
        if token_id is None:
            raise ValueError("choose an alternative token first")
        original = self.trace.token_ids[0, : int(self.trace.lengths[0])].tolist()
        piece, sampled = show_token(self.tokenizer, token_id), show_token(self.tokenizer, original[step])
        if self.trace.is_stop(token_id):
            self.branch_result = None
            self.branch_html.value = viz.branch_html(step, piece, sampled)
            return
        self._branching = (step, piece, sampled)
        self.generate(self.branch_prompt(step, token_id),
                      then=lambda result: self._show_branch(result, step, original, piece, sampled),
                      max_new_tokens=int(self.max_new_tokens.value), settings=self.settings(),
                      seed=int(self.seed.value), chat=False)  # the prompt is already templated

    def _show_branch(self, result: GenerationResult, step: int, original: list[int], piece: str, sampled: str) -> None:
        self._branching = None
        self.branch_result = result
        branch_ids = result.new_token_ids[0]
        after_original = original[step + 1:]
        marks = [i >= step for i in range(len(original))]
        left = viz.token_html(viz.text_data(self.trace, self.tokenizer), changed=marks, panel="below", legend=False)
        right = viz.token_html(viz.text_data(self.branch_result.trace, self.tokenizer),
                               changed=viz.changed_tokens(after_original, branch_ids), panel="below", legend=False)
        self.branch_html.value = viz.branch_html(step, piece, sampled, [
            (f"Original: {sampled} at step {step}, then {len(after_original)} tokens", left),
            (f"Branch: {piece} at step {step}, then {len(branch_ids)} new tokens", right)])
