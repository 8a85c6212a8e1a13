"""What the tests share: the repository's root, the small settings, pixels, a free port, the app
served in-process, and Chromium with the helpers that drive the page.

A plain module, importable from every test folder (pytest.ini puts ``tests/`` on the path):
``from support import SMALL, pixels``. It imports neither torch nor gradio when imported (only
where a function needs them), so the pure tests in ``tests/core`` use it too. Fixtures built on
it live in the conftest files.
"""

from __future__ import annotations

import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

# 1. Settings that keep the tiny model fast -----------------------------------------------------

SMALL = {"prompt": "1girl, solo", "width": 256, "height": 256, "prior_steps": 3, "decoder_steps": 2, "seed": 1234}
"""One image of 256x256 in 3 prior and 2 decoder steps, seed 1234. A test that needs other values
says so: ``{**SMALL, "prior_steps": 8}``."""


def pixels(source: Any, index: int = 0) -> np.ndarray:
    """The RGB pixels of an image: a file path, a PIL image, or a generation result (its ``index``-th
    image), as a ``(height, width, 3)`` uint8 array. Compare two with ``np.array_equal``."""
    if hasattr(source, "images"):
        source = source.images[index].image
    if isinstance(source, (str, Path)):
        with Image.open(source) as image:
            return np.asarray(image.convert("RGB"))
    return np.asarray(source.convert("RGB"))


# 2. A free port --------------------------------------------------------------------------------


def wildcard_chain(folder: Path, levels: int, lines: int = 30, refs_a_line: int = 1, stem: str = "l") -> Path:
    """Wildcard files ``{stem}0.txt`` .. of ``lines`` lines each, every line naming the next file; returns ``folder``."""
    for level in range(levels):
        last = level == levels - 1
        ref = "" if last else f" __{stem}{level + 1}__" * refs_a_line
        body = [f"pick {level}-{i}{ref}" for i in range(lines)]
        (folder / f"{stem}{level}.txt").write_text("\n".join(body) + "\n", encoding="utf-8")
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the system picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# 3. The app, served in this process ------------------------------------------------------------


def make_studio(tiny_pair, folder: Path, **config: Any):
    """A Studio on the tiny pair (CPU, fp32) with an engine of its own; its outputs and presets in
    ``folder``. ``config`` sets any other StudioConfig field (``demo=True``, ``outputs=None``)."""
    from sote_ui.service.studio import Studio, StudioConfig

    prior, decoder = tiny_pair
    values = {"prior": str(prior), "decoder": str(decoder), "device": "cpu", "mode": "fp32",
              "outputs": str(Path(folder) / "outputs"), "presets_dir": str(Path(folder) / "presets"), **config}
    return Studio(StudioConfig(**values))


@dataclass
class Served:
    """A live server: its studio, the Gradio Blocks, its URL and a client of it (made on first use)."""

    studio: Any
    demo: Any
    url: str
    _clients: list = field(default_factory=list)
    _client: Any = None

    @property
    def client(self):
        """One gradio_client session, shared by the calls of the module that serves the app."""
        if self._client is None:
            self._client = self.connect()
        return self._client

    def connect(self, **kwargs: Any):
        """Another visitor: a new gradio_client session (closed with the server)."""
        from gradio_client import Client

        client = Client(self.url, verbose=False, **kwargs)
        self._clients.append(client)
        return client

    @property
    def outputs(self) -> Path | None:
        return Path(self.studio.config.outputs) if self.studio.config.outputs else None

    @property
    def presets(self) -> Path | None:
        return Path(self.studio.config.presets_dir) if self.studio.config.presets_dir else None

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.demo.close()
        self.studio.close()


@contextmanager
def serve_app(studio, *, queue_size: int = 20, **launch: Any) -> Iterator[Served]:
    """Serve ``studio`` as app.py does (its queue, one GPU job at a time, ``launch_options``,
    errors shown) on a free port of 127.0.0.1, with the model loaded; closed at the end.
    ``launch`` adds or overrides ``demo.launch`` options, e.g. ``auth=("user", "password")``."""
    from sote_ui.ui.app import build_demo, launch_options

    demo = build_demo(studio)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    studio.start_loading()
    options = {"show_error": True, **launch_options(studio), **launch}
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **options)
    served = Served(studio, demo, url)
    try:
        assert studio.wait_loaded(300), studio.status()
        yield served
    finally:
        served.close()


# 4. Chromium and the page ----------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
# Without these, headless Chromium keeps trying to reach Google's services and can hang here.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}


@contextmanager
def chromium():
    """Debian's chromium, headless, driven by Playwright; the test is skipped where either is missing."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str, viewport: dict = DESKTOP):
    """A page of its own (its own session) at ``url``, once the model is ready; page errors are
    collected in ``page.errors``."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#prompt textarea").wait_for()
    # The model is loaded once the status says so; Generate then has its plain label.
    page.locator("#status").filter(has_text="ready on").wait_for(timeout=180_000)
    return page


def pick(page, elem_id: str, option: str) -> None:
    """Choose ``option`` in a Gradio 6 dropdown: a combobox input whose options appear in a listbox."""
    box = page.locator(f"#{elem_id} input[role=combobox]")
    box.click()
    listbox = box.get_attribute("aria-controls")  # this dropdown's own list, not another one still open
    scope = page.locator(f"[id='{listbox}']") if listbox else page
    scope.get_by_role("option", name=option, exact=True).click()


def dropdown_text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input[role=combobox]").input_value()


def set_number(page, label: str, value) -> None:
    """Type into the number box next to a slider (labelled 'number input for LABEL')."""
    box = page.get_by_label(f"number input for {label}", exact=True)
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def number(page, label: str) -> str:
    return page.get_by_label(f"number input for {label}", exact=True).input_value()


def expect_number(page, label: str, value) -> None:
    """Wait (up to 10 s) for a slider's number box to show ``value``."""
    from playwright.sync_api import expect

    expect(page.get_by_label(f"number input for {label}", exact=True)).to_have_value(str(value), timeout=10_000)


def expect_value(locator, part: str) -> None:
    """Wait for a text field's value (not its text content) to contain ``part``."""
    from playwright.sync_api import expect

    expect(locator).to_have_value(re.compile(re.escape(part)), timeout=30_000)


def expect_dropdown(page, elem_id: str, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(f"#{elem_id} input[role=combobox]")).to_have_value(text, timeout=10_000)


def small_settings(page, prior_steps: int = 3, decoder_steps: int = 2) -> None:
    """A prompt, 256x256 and a few steps, typed into the Generate tab."""
    page.locator("#prompt textarea").fill("1girl, solo, smile, hoodie")
    pick(page, "resolution", "custom")
    for label, value in (("Width", 256), ("Height", 256), ("Prior steps (stage C)", prior_steps),
                         ("Decoder steps (stage B)", decoder_steps)):
        set_number(page, label, value)


def generate_and_wait(page, images: int = 1) -> None:
    before = page.locator("#gallery .grid-container .thumbnail-item").count()
    page.locator("#generate").click()
    page.wait_for_function(f"() => document.querySelectorAll('#gallery .grid-container .thumbnail-item').length >= {before + images}",
                           timeout=180_000)
    page.locator("#summary").filter(has_text="image").wait_for()


def click_thumbnail(page, index: int) -> None:
    """Click the gallery's ``index``-th image where a person sees it: in the strip under the large image
    when one is shown (a run selects its first image), else in the grid."""
    strip = page.locator("#gallery .preview .thumbnail-item")
    (strip if strip.count() else page.locator("#gallery .grid-container .thumbnail-item")).nth(index).click()


def no_error_badges(page) -> bool:
    return page.get_by_text("Error", exact=True).count() == 0


def toast(page, text: str):
    return page.locator(".toast-body").filter(has_text=text)
