"""The canny preview in Chromium: with canny picked and a control image uploaded, the panel shows the edge
map the run follows (fitted to the size); a lower threshold draws more edges, another size redraws it;
another ControlNet hides it."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw
from support import pick, set_number, small_settings

from sote_ui.core.images import fit_to
from sote_ui.engine.controlnet import canny

CANNY = "canny: follow the edges"


def control_picture(tmp_path):
    # A strong edge (Sobel magnitude far above 200) and a faint square: 120 along its sides, 180 at its corners,
    # so its edges need a high threshold under 180 to start from.
    image = Image.new("RGB", (256, 256), (120, 120, 120))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 120, 120), fill=(250, 250, 250))
    draw.rectangle((150, 140, 230, 230), fill=(150, 150, 150))
    path = tmp_path / "edges.png"
    image.save(path)
    return path


def preview_pixels(page, previous: str | None = None) -> tuple[str, np.ndarray]:
    """(src, pixels) of the preview image shown, once its src differs from ``previous``."""
    img = page.locator("#canny_preview img")
    img.wait_for(state="visible")
    page.wait_for_function(
        "prev => { const i = document.querySelector('#canny_preview img'); "
        "return i && i.complete && i.naturalWidth > 0 && i.src !== prev; }", arg=previous or "", timeout=60_000)
    src = img.get_attribute("src")
    data = page.evaluate("""async src => {
        const bytes = new Uint8Array(await (await fetch(src)).arrayBuffer());
        let text = ''; for (const b of bytes) text += String.fromCharCode(b);
        return btoa(text); }""", src)
    return src, np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))


def test_the_canny_preview_follows_the_image_and_thresholds(page, tmp_path):
    path = control_picture(tmp_path)
    small_settings(page)  # 256x256, the picture's own size
    page.get_by_text("Inpaint / control").click()
    page.locator("#control_image input[type=file]").set_input_files(str(path))
    page.locator("#control_image img").wait_for()
    assert not page.locator("#canny_preview img").is_visible()  # no preview before canny is picked
    pick(page, "control", CANNY)

    src, shown = preview_pixels(page)
    expected = np.asarray(canny(Image.open(path), 100, 200))
    assert np.array_equal(shown, expected)
    assert (shown[140:235, 145:235] == 255).sum() == 0  # the faint square draws no edge at 100/200

    set_number(page, "Canny high", 150)
    src, looser = preview_pixels(page, src)
    assert np.array_equal(looser, np.asarray(canny(Image.open(path), 100, 150)))
    assert (looser[140:235, 145:235] == 255).sum() > 100  # now it does
    assert (looser == 255).sum() > (shown == 255).sum()

    set_number(page, "Height", 384)
    _, taller = preview_pixels(page, src)
    assert taller.shape == (384, 256)
    assert np.array_equal(taller, np.asarray(canny(fit_to(Image.open(path), 256, 384, "crop"), 100, 150)))

    pick(page, "control", "inpaint")
    page.locator("#canny_preview img").wait_for(state="hidden")
