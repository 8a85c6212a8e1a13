"""The real page in a real browser: app.py --demo in a subprocess, driven by Debian's chromium through Playwright.

Types tags, picks a rating, sets a small custom size and few steps, checks the
composed prompt preview, generates, waits for the image in the gallery and
saves a full-page screenshot: to docs/screenshot.png (the README's) when UPDATE_SCREENSHOT=1 is set,
else into the test's temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshot.png"
# Without these, headless Chromium keeps trying to reach Google's services and can hang here.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def server(sync_playwright, tmp_path_factory):
    """``python app.py --demo`` on a free port; yields its URL, stops it at the end."""
    home = tmp_path_factory.mktemp("studio-home")
    outputs = home / "outputs"
    port = free_port()
    log = (home / "app.log").open("w")
    env = {**os.environ, "SOTE_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--demo", "--device", "cpu", "--port", str(port), "--outputs", str(outputs),
         "--presets-dir", str(home / "presets")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{(home / 'app.log').read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer within 180 s:\n{(home / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, outputs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def page(sync_playwright, server):
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def pick(page, elem_id: str, option: str) -> None:
    """Choose ``option`` in a Gradio 6 dropdown: a combobox input whose options appear in a listbox."""
    page.locator(f"#{elem_id} input[role=combobox]").click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page, label: str, value: int) -> None:
    """Type into the number box next to a slider (labelled 'number input for LABEL')."""
    box = page.get_by_label(f"number input for {label}", exact=True)
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def test_generate_in_the_browser(page, server, tmp_path):
    url, outputs = server
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="domcontentloaded")
    prompt = page.locator("#prompt textarea")
    prompt.wait_for()
    assert "Demo mode" in page.locator("#demo_banner").inner_text()

    prompt.fill("1girl, solo, smile, hoodie")
    pick(page, "rating", "general")
    pick(page, "resolution", "custom")
    for label, value in (("Width", 256), ("Height", 256), ("Prior steps (stage C)", 3),
                         ("Decoder steps (stage B)", 2)):
        set_number(page, label, value)
        assert page.get_by_label(f"number input for {label}", exact=True).input_value() == str(value)

    # The preview shows the prompt as sent: picked tags in the dataset's order, then the user's.
    expected = "very aesthetic, best quality, newest, general, 1girl, solo, smile, hoodie"
    composed = page.locator("#composed code")
    composed.filter(has_text=expected).wait_for()
    assert composed.inner_text().strip() == expected

    page.locator("#generate").click()
    image = page.locator("#gallery img").first
    image.wait_for(state="visible", timeout=180_000)
    page.wait_for_function("() => { const img = document.querySelector('#gallery img');"
                           " return img && img.complete && img.naturalWidth > 0; }")
    assert page.locator("#gallery img").count() >= 1
    size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [256, 256]
    assert "seed" in page.locator("#gallery").inner_text()
    saved = list(outputs.glob("sote-*.png"))
    assert len(saved) == 1

    page.locator("#report").filter(has_text="decoder_steps_run").wait_for()
    report = page.locator("#report").inner_text()
    assert expected in report.replace("\n", "")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "screenshot.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    assert SCREENSHOT.stat().st_size > 10_000
    assert errors == []
