"""Coloured tokens that answer a click: the text half of an explorer.

The HTML (tokens, colours, the side panel of alternatives) comes from :func:`txtgen_nb.viz.token_html`;
this widget only adds what plain ``ipywidgets.HTML`` cannot: a click or tap on a token sets
``selected`` (its step) in Python, and the current step is outlined without resending the HTML.

Usage::

    text = TokenText(html=viz.token_html(viz.text_data(trace, tok)))
    text.observe(lambda change: print(change["new"]), names="selected")
"""

from __future__ import annotations

import anywidget
import traitlets

_ESM = """
function render({ model, el }) {
  el.classList.add("tg-token-text");
  const mark = () => {
    const selected = model.get("selected");
    for (const token of el.querySelectorAll(".tg-tok")) {
      token.classList.toggle("tg-current", Number(token.dataset.step) === selected);
    }
  };
  const draw = () => { el.innerHTML = model.get("html"); mark(); };
  const choose = (event) => {
    const token = event.target.closest(".tg-tok");
    if (!token || (event.type === "keydown" && event.key !== "Enter" && event.key !== " ")) return;
    model.set("selected", Number(token.dataset.step));
    model.save_changes();
  };
  el.addEventListener("click", choose);
  el.addEventListener("keydown", choose);
  model.on("change:html", draw);
  model.on("change:selected", mark);
  draw();
}
export default { render };
"""


class TokenText(anywidget.AnyWidget):
    """Token HTML from ``viz.token_html`` plus a two-way ``selected`` step (-1: none)."""

    _esm = _ESM
    html = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
