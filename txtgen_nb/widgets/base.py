"""What every explorer shares: loading the model, the busy state, errors shown inside the widget,
and counted model calls.

Inside a Jupyter kernel, generation runs in a background thread: the text grows in the view as it
is generated, **Stop** ends it, and a newer request (a slider moved again) stops the one running
and runs next. Elsewhere (scripts, tests) it runs in the caller's thread.

Usage (a new explorer)::

    class MyExplorer(Explorer):
        def __init__(self, *model_params_tokenizer, prompt="Once upon a time", **kwargs):
            super().__init__(*model_params_tokenizer, **kwargs)
            c = self.adopt(SamplingControls(), prompt)    # build the children ...
            self.plot = plot_image()
            self.widget = explorer_row([self.prompt_area, c.panel, self.status_bar], [self.plot], self.error)
            self.observe(self.prompt, self.run)             # ... then wire them
            self.start()

        def run(self):
            self.generate(self.prompt.value, then=self.show_result, max_new_tokens=40)

        def show_result(self, result):
            self.story = result.texts[0]                  # e.g. draw result.trace into self.plot
"""

from __future__ import annotations

import contextlib
import functools
import html
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import ipywidgets as widgets
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb import corpus, generation, viz
from txtgen_nb.api import MODELS, load_model_and_tokenizer
from txtgen_nb.generation import GenerationResult, SamplingSettings, Stream, Trace
from txtgen_nb.model import context_length
from txtgen_nb.tokenizer import shown_prompt, special_tokens
from txtgen_nb.widgets.controls import SamplingControls, new_tokens_limit
from txtgen_nb.widgets.layout import chat_box, model_note, model_parts, model_picker, prompt_box, truth_box

DEFAULT_PROMPT = "Once upon a time"
MODEL_TURN = threading.Lock()  # one explorer generates at a time: the first compiles, the others reuse it
USER_ERRORS = (ValueError, FileNotFoundError, OSError)
OPEN_CONTEXT = 256  # the length sliders' limit for a module that declares no context of its own
PREPARING = "Preparing the model for this size (first time only: about 5-20 s)…"
WARMING = "Preparing the other samplers and prompt lengths (first time only; the controls work meanwhile)…"


def in_kernel() -> bool:
    """Whether this runs inside a Jupyter kernel (where a frontend can press Stop mid-generation)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


@functools.lru_cache(maxsize=2)
def shared_model(name: str) -> tuple:
    """``load_model_and_tokenizer`` of a :data:`txtgen_nb.api.MODELS` name, loaded once per kernel:
    every explorer that picks it shares the weights (SmolLM2 holds 540 MB; a class server gives a
    student 1-2 GB). Usage: ``model, params, tok, config = shared_model(next(iter(MODELS)))``"""
    return load_model_and_tokenizer(MODELS[name]())


def one_line(err: BaseException | str, escape: bool = True) -> str:
    """An error as one line of text, HTML-escaped unless ``escape=False``.

    Usage: ``one_line(ValueError("bad\\nvalue"))``
    """
    text = " ".join(str(err).splitlines()).strip() or type(err).__name__
    return html.escape(text) if escape else text


class Explorer:
    """Model loading, busy state, one-line errors and counted model calls for every explorer.

    ``model, params, tokenizer`` are given together, or none of them: then ``checkpoint`` (a path,
    or a name of :data:`txtgen_nb.api.MODELS`) or the bundled demo model is loaded, and a **Model**
    menu switches between the tutorials' models. Where the model has a chat template, **Chat**
    (``chat=True``) wraps the prompt as the user's message and the view shows the template greyed.
    With the demo model chosen there, **Mark what the grammar allows** puts the story grammar's ✓ / ✗
    on every candidate (:func:`txtgen_nb.corpus.valid_next_tokens`).
    Errors in loading or in a callback are shown in ``.error`` as one line; ``.status`` shows what
    is running; ``.generate_calls`` counts model calls.
    """

    def __init__(
        self,
        model: nnx.Module | None = None,
        params: nnx.State | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        checkpoint: str | Path | None = None,
        chat: bool = False,
    ) -> None:
        self.generate_calls = 0
        self.result: GenerationResult | None = None
        self.trace: Trace | None = None
        self.model: nnx.Module | None = None
        self.params: nnx.State | None = None
        self.tokenizer: Tokenizer | None = None
        self.status = widgets.HTML(value="", layout=widgets.Layout(min_height="1.6em"))
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="warning",
                                          tooltip="End this generation after the current chunk of tokens",
                                          layout=widgets.Layout(width="auto", display="none"))
        self.stop_button.on_click(lambda _button: self.stop())
        self.status_bar = widgets.HBox([self.status, self.stop_button],
                                       layout=widgets.Layout(align_items="center", justify_content="space-between"))
        self.background = in_kernel()  # generate in a thread, so that Stop can act
        self._stream: Stream | None = None
        self._worker: threading.Thread | None = None
        self._pending: tuple | None = None  # the newest request made while one runs
        self._jobs = threading.Lock()
        self._drawing = threading.RLock()  # one thread at a time draws (the figures are shared)
        self.error = widgets.HTML(value="")
        self.busy_targets: list[widgets.Widget] = []  # disabled while busy (buttons)
        self.controls: SamplingControls | None = None
        self.widget: widgets.Widget = widgets.VBox()
        self._muted = False
        self._warmed = False  # whether this explorer's model has compiled what the next changes need (warm_up)
        picked = model is None and (checkpoint is None or str(checkpoint) in MODELS)
        self.model_picker = model_picker(str(checkpoint) if picked and checkpoint is not None else None, shown=picked)
        self.model_note = widgets.HTML(model_note(self.model_picker.value) if picked else "")
        self.chat = chat_box(chat)
        self.truth = truth_box()
        self.knows_grammar = False  # the model is the demo, trained on the story grammar
        with self.errors_shown():
            self._load(model, params, tokenizer, None if picked else checkpoint)

    def _load(self, model, params, tokenizer, checkpoint) -> None:
        given = [x is not None for x in (model, params, tokenizer)]
        if any(given) and not all(given):
            raise ValueError("pass model, params and tokenizer together (or none of them for the demo model)")
        if not any(given):
            loaded = shared_model(self.model_picker.value) if checkpoint is None else load_model_and_tokenizer(checkpoint)
            model, params, tokenizer, _config = loaded
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self._warmed = False
        self.chat.layout.display = "" if self.has_chat_template else "none"
        self.knows_grammar = not any(given) and checkpoint is None and self.model_picker.value == next(iter(MODELS))
        self.truth.layout.display = "" if self.knows_grammar else "none"

    @property
    def has_chat_template(self) -> bool:
        """Whether the loaded model has a chat template (then **Chat** is shown)."""
        return self.tokenizer is not None and special_tokens(self.tokenizer).chat_template is not None

    @property
    def oracle(self):
        """``corpus.valid_next_tokens`` while **Mark what the grammar allows** is ticked (demo model), else ``None``."""
        return corpus.valid_next_tokens if self.knows_grammar and self.truth.value else None

    @property
    def chat_on(self) -> bool:
        """Whether prompts go through the model's chat template (**Chat** ticked, and a template)."""
        return bool(self.chat.value) and self.has_chat_template

    def pick_model(self, name: str | None = None) -> None:
        """Load the model named in **Model** (or ``name``, a key of :data:`txtgen_nb.api.MODELS`),
        forget the last result and generate again.

        Usage: ``explorer.pick_model("SmolLM2-135M-Instruct (a real small LLM)")``
        """
        if name is not None and name != self.model_picker.value:
            self.model_picker.value = name  # its observer loads the model
            return
        self.stop()
        self.wait()
        self.model_note.value = model_note(self.model_picker.value)
        with self.busy(f"Loading {model_parts(self.model_picker.value)[0]}…"):
            self._load(None, None, None, None)
        self.result = self.trace = None
        self.reset()
        if self.max_new_tokens is not None:
            self.max_new_tokens.max = new_tokens_limit(self.context_size)
        self.generate_button.disabled = False
        self.run()

    def reset(self) -> None:
        """Forget what the views compare against (a new model was loaded; explorers override this)."""

    @property
    def ready(self) -> bool:
        """Whether a model is loaded."""
        return self.model is not None

    @property
    def context_size(self) -> int:
        """The model's context length in tokens (256 for a module that declares none, 128 without a model)."""
        return context_length(self.model, OPEN_CONTEXT) if self.model is not None else 128

    # ----- errors ---------------------------------------------------------------------------

    def show_error(self, err: BaseException | str) -> None:
        """Show one escaped line in the error box. Usage: ``explorer.show_error("bad value")``"""
        self.error.value = viz.error_html(one_line(err, escape=False))

    @contextlib.contextmanager
    def errors_shown(self, clear: bool = True) -> Iterator[None]:
        """Run the block; show a user error (bad path or setting) in the error box instead of raising."""
        if clear:
            self.error.value = ""
        try:
            yield
        except USER_ERRORS as err:
            self.show_error(err)

    def safely(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` as a widget callback that shows user errors in the widget."""
        def callback(*args: Any) -> None:
            with self.errors_shown():
                fn(*args)
        return callback

    # ----- observers ------------------------------------------------------------------------

    def observe(self, widget: widgets.Widget, fn: Callable[[], None], name: str = "value") -> None:
        """Call ``fn()`` when ``widget.<name>`` changes, unless the explorer set it itself."""
        def on_change(_change: dict) -> None:
            if not self._muted:
                with self._drawing:
                    self.safely(fn)()
        widget.observe(on_change, names=name)

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Set widget values without triggering the explorer's own observers."""
        self._muted, muted = True, self._muted
        try:
            yield
        finally:
            self._muted = muted

    # ----- busy state and model calls -------------------------------------------------------

    @contextlib.contextmanager
    def busy(self, message: str = "Generating…") -> Iterator[None]:
        """Show a spinner and ``message`` and disable the buttons while the block runs."""
        for target in self.busy_targets:
            target.disabled = True
        self.status.value = viz.busy_html(message)
        self.widget.add_class("tg-is-busy")
        try:
            yield
        finally:
            self.widget.remove_class("tg-is-busy")
            for target in self.busy_targets:
                target.disabled = not self.ready
            self.status.value = ""

    def generate(self, prompts: str | Sequence[str], then: Callable[[GenerationResult], None], **kwargs: Any) -> None:
        """One counted model call (``generate_stream`` with ``trace=True``) behind the busy indicator,
        its text growing in the view (:meth:`show_live`); ``then(result)`` shows the result.

        In the background, a call made while another runs stops that one (its result is dropped)
        and runs when it has ended; only the newest waiting call is kept.
        """
        kwargs.setdefault("chat", self.chat_on)
        job = (prompts, then, kwargs)
        if not self.background:
            self._run_job(*job)
            return
        with self._jobs:
            if self._worker is not None:
                self._pending = job
                if self._stream is not None:
                    self._stream.stop()
                return
            self._worker = threading.Thread(target=self._work, args=(job,), daemon=True, name="txtgen-explorer")
        self._worker.start()

    def _work(self, job: tuple) -> None:
        """The background thread: run ``job``, then any newer one requested meanwhile."""
        while job is not None:
            try:
                self._run_job(*job)
            except Exception as err:  # noqa: BLE001 - a thread has nobody to raise to: show it
                self.show_error(f"{type(err).__name__}: {one_line(err, escape=False)}")
            with self._jobs:
                job, self._pending = self._pending, None
                if job is None:
                    self._worker = None

    def _run_job(self, prompts: str | Sequence[str], then: Callable[[GenerationResult], None], kwargs: dict) -> None:
        with self.errors_shown(clear=False), self.busy(), MODEL_TURN:  # the callback cleared old errors
            with warnings.catch_warnings(record=True) as notices:  # a prompt cut to the context: say so
                warnings.simplefilter("always")
                self._stream = stream = generation.generate_stream(self.model, self.params, self.tokenizer, prompts,
                                                                   trace=True, **kwargs)
            if notices:
                self.error.value = "".join(viz.notice_html(one_line(n.message, escape=False)) for n in notices)
            if not stream.prepared:
                self.status.value = viz.busy_html(PREPARING)
            shown = [shown_prompt(self.tokenizer, ids, stream.request.chat) for ids in stream.request.prompt_ids]
            self.stop_button.layout.display = ""
            try:
                for pieces in stream:
                    if any(pieces):
                        self.show_live(shown, stream.texts)
                    self.status.value = viz.busy_html(f"Generating… {stream.steps_done} of {stream.total_steps} "
                                                      "tokens")
            finally:
                self.stop_button.layout.display = "none"
                self._stream = None
            self.generate_calls += 1
            if self._pending is None:  # not superseded by a newer request
                with self._drawing:
                    then(stream.result)
        if self.background and not self._warmed:
            self._warm_up(stream)

    def _warm_up(self, stream: Stream) -> None:
        """After the first result: compile what later changes need (any prompt of up to 128 tokens,
        every sampler) while the class reads it, with a status line; the controls stay live (a
        request made meanwhile runs next)."""
        self._warmed = True
        self.status.value = viz.busy_html(WARMING)
        try:
            with MODEL_TURN:
                generation.warm_up(self.model, self.params, batch=stream.batch,
                                   max_new_tokens=stream.request.max_new_tokens, trace=True)
        finally:
            if self.status.value == viz.busy_html(WARMING):
                self.status.value = ""

    def stop(self) -> None:
        """End the running generation after its current chunk of tokens (what **Stop** does)."""
        stream = self._stream
        if stream is not None:
            stream.stop()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background generation (and any waiting after it) has finished.

        Usage: ``explorer.wait(); explorer.result.texts``
        """
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def show_live(self, prompts: list[str], texts: list[str]) -> None:
        """Show the texts generated so far (explorers with a text view override this)."""

    def run(self) -> None:
        """Run the model with the current controls (what the main button does)."""
        raise NotImplementedError

    # ----- the shown step -------------------------------------------------------------------

    top_n = 20  # candidates shown per step

    @property
    def shown_step(self) -> int:
        """The step the plot shows (explorers with a step slider override it)."""
        return 0

    def settings(self) -> SamplingSettings:
        """The settings the sliders show, or those of the last generation where there are no sliders."""
        if self.controls is not None and self.controls.sliders:
            return self.controls.settings()
        if self.trace is None:
            raise ValueError("nothing generated yet")
        return self.trace.settings[0]

    def adopt(self, controls: SamplingControls, prompt: str) -> SamplingControls:
        """Take the shared control panel and a prompt box: their widgets become attributes
        (``.prompt``, ``.seed``, ``.temperature``, ...), the buttons are disabled while busy or
        without a model, and a bad starting setting shows in the error box. ``.prompt_area`` holds
        the model menu, the prompt and **Chat**; choosing a model or ticking Chat generates again."""
        self.controls, self.prompt = controls, prompt_box(prompt)
        self.prompt_area = widgets.VBox([self.model_picker, self.model_note, self.prompt, self.chat, self.truth],
                                        layout=widgets.Layout(width="100%"))
        self.observe(self.model_picker, self.pick_model)
        self.observe(self.chat, self.run)
        self.seed, self.max_new_tokens = controls.seed, controls.max_new_tokens
        self.temperature, self.top_k, self.top_p, self.min_p = controls.filters
        self.generate_button, self.new_sample = controls.button, controls.new_sample
        self.busy_targets = [self.generate_button, self.new_sample]
        self.generate_button.disabled = not self.ready
        if controls.problem:
            self.show_error(controls.problem)
        return controls

    def current_step_data(self) -> viz.StepData:
        """``viz.step_data`` of the shown step with the shown settings (no model call), once the
        running generation has finished.

        Usage: ``explorer.current_step_data().num_kept``
        """
        self.wait()
        return self.step_data()

    def step_data(self) -> viz.StepData:
        """``viz.step_data`` of the shown step now (callbacks: without waiting for a generation)."""
        if self.trace is None:
            raise ValueError("nothing generated yet")
        return viz.step_data(self.trace, self.tokenizer, self.shown_step, settings=self.settings(), top_n=self.top_n,
                             oracle=self.oracle)

    def start(self) -> None:
        """The first run at construction, keeping any error shown so far."""
        if self.ready:
            with self.errors_shown(clear=False):
                self.run()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        """In a notebook: a note that stands in for the explorer once the kernel is gone (a saved
        notebook reopened), hidden while the explorer is live, then the explorer."""
        from IPython.display import HTML, display

        display(HTML(viz.offline_note_html(type(self).__name__)))
        display(self.widget)
