"""The explorer notebook in a real JupyterLab, driven by headless Chromium through Playwright.

Starts ``jupyter lab`` on a free local port with throw-away settings, opens
``notebooks/04_interactive_explorer.ipynb``, runs all cells and checks that the widgets render as
widgets (not as "Error displaying widget" or their text form), then drags the first explorer's
Temperature slider and waits for the kernel to redraw its plot.

Screenshots go to ``artifacts/browser/`` (``before.png``, ``after.png``, ``failure.png`` when the
test fails), next to the server log ``jupyter.log`` and the browser console ``console.log``.

Needs Chromium (Debian: ``apt-get install chromium``, or ``make chromium``); skipped without it.
Playwright drives that system Chromium, so ``playwright install`` is never needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/04_interactive_explorer.ipynb"  # relative to the server's root_dir
ARTIFACTS = REPO / "artifacts" / "browser"

SERVER_START_S = 90  # until /api/status answers
RUN_ALL_S = 180  # all cells executed: the first one imports JAX, loads the demo model and compiles
REDRAW_S = 60  # slider released -> new plot image
SHUTDOWN_S = 20

# Throw-away JupyterLab user settings: no news/update toasts (no network), all cells attached to the DOM,
# no autosave (the notebook in the repo keeps no outputs; checkpoints go to a temporary folder too).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


# ----- the JupyterLab server ---------------------------------------------------------------------

@dataclass
class LabServer:
    base_url: str
    token: str
    process: subprocess.Popen
    runtime_dir: Path  # private: the kernels' connection files are in it

    def url(self, path: str) -> str:
        """``http://127.0.0.1:PORT/<path>?token=...``"""
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5) -> bytes:
        request = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_lab_settings(settings_dir: Path) -> None:
    for name, values in LAB_SETTINGS.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


def wait_until_up(server: LabServer, log: Path) -> None:
    """Poll ``/api/status`` until it answers (bounded); fail with the log tail if the server dies."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):  # refused / reset / HTTP errors while starting
            server.api("status", timeout=2)
            return
        time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def own_kernel_pids(runtime_dir: Path) -> list[int]:
    """Processes whose command line names a file in the server's private runtime folder: its kernels."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if f"{runtime_dir}{os.sep}".encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
    return pids


def stop_server(server: LabServer) -> None:
    """Shut the server down through the API (it stops its kernels); kill whatever is left of it by pid."""
    with contextlib.suppress(OSError):
        server.api("shutdown", method="POST")
    try:
        server.process.wait(timeout=SHUTDOWN_S)
    except subprocess.TimeoutExpired:
        server.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):  # the server was started in a session of its own
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    for pid in own_kernel_pids(server.runtime_dir):  # kernels run in sessions of their own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def lab_root() -> Path:
    """The server's root_dir; ``NOTEBOOK`` is relative to it."""
    return REPO


@pytest.fixture
def lab_server(tmp_path: Path, lab_root: Path) -> Iterator[LabServer]:
    """A private ``jupyter lab`` on 127.0.0.1 with a random token; stopped (kernels included) afterwards."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settings_dir = tmp_path / "lab-settings"
    write_lab_settings(settings_dir)
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}  # Agg hides inline plots
    runtime_dir = tmp_path / "runtime"
    env.update(JUPYTER_RUNTIME_DIR=str(runtime_dir), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               IPYTHONDIR=str(tmp_path / "ipython"), PYTHONUNBUFFERED="1")
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={lab_root}",
        f"--LabApp.user_settings_dir={settings_dir}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--FileCheckpoints.checkpoint_dir={tmp_path / 'checkpoints'}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: read the kernel's state
    ]
    log = ARTIFACTS / "jupyter.log"
    with log.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, cwd=lab_root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, process, runtime_dir)
    try:
        wait_until_up(server, log)
        yield server
    finally:
        stop_server(server)


# ----- the browser -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium() -> str:
    path = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
    if not path:
        pytest.skip("chromium not installed: apt-get install chromium")
    return path


@pytest.fixture
def page(chromium: str):
    """A fresh headless Chromium page (1400x1000); its console messages go to ``artifacts/browser/console.log``."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    messages: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"])
        try:
            new_page = browser.new_page(viewport={"width": 1400, "height": 1000})
            new_page.on("console", lambda msg: messages.append(f"[{msg.type}] {msg.text}"))
            new_page.on("pageerror", lambda err: messages.append(f"[pageerror] {err}"))
            yield new_page
        finally:
            (ARTIFACTS / "console.log").write_text("\n".join(messages) + "\n", encoding="utf-8")
            browser.close()


def screenshot(page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


@contextlib.contextmanager
def screenshot_on_failure(page) -> Iterator[None]:
    """Keep ``failure.png`` of the page as it was when anything in the block failed."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            screenshot(page, "failure")
        raise


# ----- JupyterLab steps --------------------------------------------------------------------------

KERNEL_IDLE_JS = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
    return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""


def open_notebook(page, url: str) -> None:
    """Open the notebook and wait until its kernel is connected and idle.

    The toolbar's execution indicator says "idle" before the kernel even starts, and Run All at that
    moment opens a "Select Kernel" dialog, so this asks the frontend's session instead.
    """
    page.goto(url)
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000, polling=250)
    page.keyboard.press("Escape")  # closes a toast, if any


def run_all_cells(page) -> None:
    """Run > Run All Cells from the main menu (the menu item's command is ``runmenu:run-all``)."""
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()


# "done" when every code cell shows an execution count ("[3]:", not "[*]:" or "[ ]:"), or the first error
# output of the notebook's model (errors render with the stderr MIME type, so the DOM cannot tell them apart).
EXECUTED_JS = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.widgets.filter(c => c.model.type === 'code');
    for (const cell of cells) {
        const error = cell.model.outputs.toJSON().find(o => o.output_type === 'error');
        if (error) return `${error.ename}: ${error.evalue}\\n\\nin the cell:\\n${cell.model.sharedModel.getSource()}`;
    }
    const prompts = cells.map(c => c.node.querySelector('.jp-InputPrompt').textContent);
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p)) ? 'done' : false;
}"""


def wait_until_executed(page) -> None:
    """Wait until every code cell has run; fail at once, with the error, when one raised."""
    state = page.wait_for_function(EXECUTED_JS, timeout=RUN_ALL_S * 1000, polling=500).json_value()
    if state != "done":
        pytest.fail(f"a cell raised {state}", pytrace=False)


def output_texts(page) -> list[str]:
    return page.locator(".jp-Notebook .jp-OutputArea-output").all_inner_texts()


# [widget outputs in the notebook's model, widget outputs rendered as widgets, outputs still "Loading widget..."]
WIDGETS_JS = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.widgets.filter(c => c.model.type === 'code');
    const expected = cells.flatMap(c => c.model.outputs.toJSON())
        .filter(o => o.data && o.data['application/vnd.jupyter.widget-view+json']).length;
    const outputs = [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')];
    const rendered = outputs.filter(o => o.querySelector(':scope > .jupyter-widgets')).length;
    const loading = outputs.filter(o => o.innerText.includes('Loading widget...')).length;
    return [expected, rendered, loading];
}"""


def wait_for_widgets(page) -> None:
    """Wait (bounded) until every widget output of the notebook is rendered as a widget."""
    deadline = time.monotonic() + 30
    while True:
        expected, rendered, loading = counts = page.evaluate(WIDGETS_JS)
        if expected and rendered == expected and not loading:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    pytest.fail(f"[widget outputs, rendered, still loading] = {counts}: not every widget rendered")


def slider_value(slider) -> float:
    return float(slider.locator(".widget-readout").inner_text())


def drag_slider(page, slider, dx: float) -> None:
    """Drag the noUiSlider handle ``dx`` pixels; with ``continuous_update=False`` the value is sent on release.

    (Each ArrowRight on a focused handle also commits at once: noUiSlider fires "change" per key press,
    so N presses mean N regenerations queued in the kernel.)
    """
    handle = slider.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=10)
    page.mouse.up()


def wait_for_new_src(img, old: str) -> str:
    """Wait (bounded) until the image's ``src`` differs from ``old`` and return the new one."""
    deadline = time.monotonic() + REDRAW_S
    while time.monotonic() < deadline:
        src = img.get_attribute("src") or ""
        if src and src != old:
            return src
        time.sleep(0.02)
    pytest.fail(f"the plot was not redrawn within {REDRAW_S} s of moving the slider")


# ----- what a person sees ----------------------------------------------------------------------

# The visible part of the notebook: the viewport clipped by the notebook's scroll container.
VISIBLE_JS = """(el) => {
    let box = {left: 0, top: 0, right: window.innerWidth, bottom: window.innerHeight};
    for (let p = el.parentElement; p; p = p.parentElement) {
        const style = getComputedStyle(p);
        const r = p.getBoundingClientRect();
        if (/(auto|scroll|hidden)/.test(style.overflowY + style.overflowX) && r.width > 0 && r.height > 0) {
            box = {left: Math.max(box.left, r.left), top: Math.max(box.top, r.top),
                   right: Math.min(box.right, r.right), bottom: Math.min(box.bottom, r.bottom)};
        }
    }
    const r = el.getBoundingClientRect();
    const inside = r.width > 0 && r.left >= box.left - 2 && r.right <= box.right + 2 && r.top >= box.top - 2
        && r.bottom <= box.bottom + 2;
    return {inside, rect: [r.left, r.top, r.right, r.bottom], visible: [box.left, box.top, box.right, box.bottom]};
}"""

# Labels, readouts and buttons whose text does not fit (shown with an ellipsis or cut).
TRUNCATED_JS = """(root) => [...root.querySelectorAll(
        '.widget-label, .widget-readout, .jupyter-button, .widget-toggle-button, .widget-label-basic')]
    .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
    .map(e => `${e.className}: ${e.textContent.trim()} (${e.scrollWidth} > ${e.clientWidth})`)"""


# the height of the notebook's scrolling area around an element (what a projector shows of it at once)
SCROLL_AREA_JS = """(el) => { for (let e = el.parentElement; e; e = e.parentElement) {
    const y = getComputedStyle(e).overflowY;
    if ((y === 'auto' || y === 'scroll') && e.scrollHeight > e.clientHeight) return e.clientHeight; }
    return window.innerHeight; }"""
# the options of a dropdown whose text is wider than the closed menu shows
SELECT_CUT_JS = """(el) => { const s = el.querySelector('select'); const st = getComputedStyle(s);
    const ctx = document.createElement('canvas').getContext('2d'); ctx.font = `${st.fontSize} ${st.fontFamily}`;
    const room = s.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight);
    return [...s.options].filter(o => ctx.measureText(o.text).width > room).map(o => o.text); }"""


def collapse_sidebar(page) -> None:
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    page.wait_for_timeout(300)


def assert_visible(element, what: str) -> None:
    where = element.evaluate(VISIBLE_JS)
    assert where["inside"], f"{what} is not fully visible: {where}"


def scroll_to_top(element) -> None:
    element.evaluate("(el) => el.scrollIntoView({block: 'start'})")
    element.page.wait_for_timeout(200)


def wait_idle(page) -> None:
    page.wait_for_function(KERNEL_IDLE_JS, timeout=REDRAW_S * 1000, polling=100)


def wait_generated(explorer, seconds: float = REDRAW_S) -> None:
    """Until the explorer's generation (a background thread: the kernel is idle meanwhile) has ended."""
    explorer.page.wait_for_function("(el) => !el.classList.contains('tg-is-busy') && !el.querySelector('.tg-live')",
                                    arg=explorer.element_handle(), timeout=seconds * 1000, polling=100)


def step_readout(explorer) -> int:
    step = explorer.locator(".widget-slider").filter(has=explorer.page.locator(".widget-label", has_text="Step"))
    return int(step.first.locator(".widget-readout").inner_text())


def press_step(explorer, key: str) -> None:
    step = explorer.locator(".widget-slider").filter(has=explorer.page.locator(".widget-label", has_text="Step"))
    step.first.locator(".noUi-handle").focus()
    explorer.page.keyboard.press(key)


def wait_for_current_token(explorer, step: int) -> None:
    explorer.locator(f".tg-token-text .tg-tok.tg-current[data-step='{step}']").wait_for(timeout=REDRAW_S * 1000)


def assert_tooltip_inside(page, token, what: str) -> None:
    token.scroll_into_view_if_needed()
    token.hover()
    tip = token.locator(".tg-tip")
    tip.wait_for(state="visible", timeout=5_000)
    assert_visible(tip, f"the alternatives of {what}")
    assert tip.evaluate("t => t.scrollHeight <= t.clientHeight + 1"), f"the alternatives of {what} are cut"


def step_redraw_latency(page, explorer) -> float:
    """Median seconds from a step key press to the new plot image (10 moves)."""
    plot = explorer.locator("img.tg-plot").first
    times = []
    for i in range(10):
        src = plot.get_attribute("src") or ""
        start = time.perf_counter()
        press_step(explorer, "ArrowRight" if i % 2 == 0 else "ArrowLeft")
        wait_for_new_src(plot, src)
        times.append(time.perf_counter() - start)
        wait_idle(page)
    return sorted(times)[len(times) // 2]


# ----- the test ----------------------------------------------------------------------------------

def test_explorers_teach_at_projector_size(lab_root, lab_server, page):
    notebook = lab_root / NOTEBOOK
    assert notebook.is_file(), f"{NOTEBOOK} is missing"
    saved = notebook.read_bytes()
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    page.set_viewport_size({"width": 1280, "height": 720})
    with screenshot_on_failure(page):
        open_notebook(page, lab_server.url(f"lab/tree/{NOTEBOOK}"))
        collapse_sidebar(page)
        run_all_cells(page)
        wait_until_executed(page)
        wait_for_widgets(page)
        texts = "\n".join(output_texts(page))
        for bad in ("Error displaying widget", "SamplingExplorer(", "VBox(children=", "HBox(children="):
            assert bad not in texts, f"{bad!r} in the notebook's outputs (widget not rendered):\n{texts[:3000]}"

        explorers = page.locator(".jp-Notebook .tg-explorer")
        assert explorers.count() == 6, f"{explorers.count()} explorers rendered"
        for i in range(explorers.count()):
            wait_generated(explorers.nth(i), RUN_ALL_S)  # the first generations compile
        explorer = explorers.first  # SamplingExplorer
        scroll_to_top(explorer)
        assert_visible(explorer.locator(".tg-controls").first, "the sampling controls")
        assert_visible(explorer.locator("img.tg-plot").first, "the plot beside the controls")
        screenshot(page, "explorer-1280x720")

        # The first move of a control changes what is shown, or says why it did not.
        summary = explorer.locator(".tg-summary").first
        first_summary = summary.inner_text()
        temperature = explorer.locator(".widget-slider").filter(
            has=page.locator(".widget-label", has_text="Temperature")).first
        drag_slider(page, temperature, dx=25)
        page.wait_for_function("([el, old]) => el.querySelector('.tg-summary')?.innerText !== old",
                               arg=[explorer.element_handle(), first_summary], timeout=REDRAW_S * 1000)
        wait_generated(explorer)
        wait_idle(page)
        moved = summary.inner_text()
        assert "tokens changed" in moved or ("No token changed" in moved and "same seed" in moved), moved
        screenshot(page, "after-temperature-move")

        # The step highlight follows the step slider, and a click on a token moves the step.
        start = step_readout(explorer)
        wait_for_current_token(explorer, start)
        press_step(explorer, "ArrowRight" if start == 0 else "ArrowLeft")
        moved_to = start + 1 if start == 0 else start - 1
        wait_for_current_token(explorer, moved_to)
        wait_idle(page)
        print(f"step {start} -> {moved_to}: highlight followed")
        target = 2 if moved_to != 2 else 3
        explorer.locator(f".tg-token-text .tg-tok[data-step='{target}']").click()
        wait_for_current_token(explorer, target)
        page.wait_for_function("([el, want]) => el.innerText.trim() === want",
                               arg=[explorer.locator(".widget-slider").filter(has=page.locator(
                                   ".widget-label", has_text="Step")).first.locator(".widget-readout").element_handle(),
                                    str(target)], timeout=REDRAW_S * 1000)
        wait_idle(page)

        print(f"clicked token {target}: step followed")
        # Alternatives show fully on hover: in the explorer and in a plain notebook output.
        last = explorer.locator(".tg-token-text .tg-tok").last
        assert_tooltip_inside(page, last, "the explorer's last token")
        output_text = page.locator(".jp-OutputArea-output > .tg-legend ~ .tg-view, .jp-RenderedHTMLCommon .tg-view")
        assert_tooltip_inside(page, output_text.first.locator(".tg-tok").last, "the last token of colored_text")

        truncated = [label for i in range(explorers.count()) for label in explorers.nth(i).evaluate(TRUNCATED_JS)]
        assert not truncated, f"truncated labels: {truncated}"

        distribution = explorers.nth(1)
        scroll_to_top(distribution)
        assert_visible(distribution.locator(".tg-controls").first, "the distribution controls")
        assert_visible(distribution.locator("img.tg-plot").first, "the distribution plot")
        screenshot(page, "distribution-1280x720")

        scroll_to_top(explorer)
        latency = step_redraw_latency(page, explorer)
        print(f"step slider redraw latency in the browser: median {latency * 1000:.0f} ms of 10 moves")

        seed = explorer.locator(".widget-text").filter(has=page.locator(".widget-label", has_text="Seed")).first.locator("input")
        seed.fill("999999")  # the largest seed "New sample" draws
        seed.press("Enter")
        wait_generated(explorer)
        assert seed.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the seed box cuts a 6-digit seed"

        # Regenerating does not move the plot within the explorer (the text keeps its height); measured from
        # the explorer's top, so a page scroll (filling the seed box scrolls it into view) is not a jump.
        wait_idle(page)
        plot = explorer.locator("img.tg-plot").first

        def plot_offset() -> float:
            return plot.bounding_box()["y"] - explorer.bounding_box()["y"]

        heights = []
        for value in ("123456", "4242"):
            before = plot_offset()
            seed.fill(value)
            seed.press("Enter")
            wait_generated(explorer)
            wait_idle(page)
            heights.append(plot_offset() - before)
        print(f"plot moved by {heights} px on two regenerations")
        assert all(abs(dy) <= 2 for dy in heights), f"the plot jumped by {heights} px on regeneration"

        # The grammar's verdict on the bars: tick the box, the plot is redrawn with a ✓ / ✗ per candidate.
        scroll_to_top(explorer)
        before = plot.get_attribute("src")
        explorer.get_by_text("Mark what the grammar allows").first.click()
        page.wait_for_function("([el, old]) => el.getAttribute('src') !== old", arg=[plot.element_handle(), before],
                               timeout=REDRAW_S * 1000)
        wait_idle(page)
        screenshot(page, "explorer-grammar-1280x720")

        # The controls column with Advanced samplers open fits the projector's notebook area (they scroll inside).
        scroll_to_top(explorer)
        explorer.get_by_text("Advanced samplers").first.click()
        page.wait_for_timeout(500)
        column = explorer.locator(".tg-controls").first
        area = column.evaluate(SCROLL_AREA_JS)
        height = column.bounding_box()["height"]
        print(f"controls column with Advanced open: {height:.0f} px of a {area} px notebook area")
        assert height <= area, f"the controls column ({height:.0f} px) is taller than the screen shows ({area} px)"
        screenshot(page, "explorer-advanced-1280x720")
        squeezed = column.evaluate("(el) => [...el.querySelectorAll('.widget-hbox, .widget-button, .widget-slider')]"
                                   ".filter(e => e.offsetParent !== null && e.getBoundingClientRect().height < 20)"
                                   ".map(e => e.textContent.trim().slice(0, 40))")
        assert not squeezed, f"controls squeezed to under 20 px in the scrolling column: {squeezed}"
        generate = column.locator(".widget-button", has_text="Generate").first
        generate.scroll_into_view_if_needed()
        assert_visible(generate, "the Generate button after scrolling the controls column")
        explorer.get_by_text("Advanced samplers").first.click()

        # The Branch menu shows each choice whole.
        branch = explorers.nth(3)
        menu = branch.locator(".widget-dropdown").filter(has=page.locator(".widget-label", has_text="Branch with"))
        cut = menu.first.evaluate(SELECT_CUT_JS)
        assert not cut, f"Branch choices cut at 1280 px: {cut}"

        page.set_viewport_size({"width": 1400, "height": 1000})
        scroll_to_top(explorer)
        screenshot(page, "explorer-1400x1000")
        scroll_to_top(explorers.nth(3))
        screenshot(page, "branch-1400x1000")

        chat = explorers.nth(4)  # SmolLM2 with Chat ticked: the template greyed before the reply
        page.set_viewport_size({"width": 1280, "height": 720})
        scroll_to_top(chat)
        template = chat.locator(".tg-token-text .tg-template").first
        assert_visible(template, "the greyed chat template")
        assert "<|im_start|>user" in template.inner_text(), template.inner_text()[:300]
        reply = "".join(chat.locator(".tg-token-text .tg-tok").all_inner_texts())
        assert "Paris" in reply, reply[:300]
        screenshot(page, "smollm2-chat-1280x720")
    assert notebook.read_bytes() == saved, "JupyterLab saved the notebook (autosave should be off)"
