"""The prompt fixer in Chromium: the line under the prompt flags an unknown and a repeated tag as they are
typed; one click on a fix, Fix all and Undo fix rewrite the prompt box."""

from __future__ import annotations

import re

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from playwright.sync_api import expect


def type_prompt(page, text: str):
    prompt = page.locator("#prompt textarea")
    prompt.click()
    prompt.press_sequentially(text, delay=15)
    prompt.press("Escape")  # close the tag suggestions
    return prompt


def test_flags_show_an_unknown_and_a_repeated_tag_and_fix_all_fixes_them(page):
    prompt = type_prompt(page, "1girl, lnog hair, smile, 1girl, 8k")
    flags = page.locator("#composed")
    expect(flags).to_contain_text("unknown lnog hair → long hair", timeout=30_000)
    expect(flags).to_contain_text("repeat 1girl")
    expect(flags).to_contain_text("untrained 8k")
    fixes = page.locator("#fix_list")
    expect(fixes).to_contain_text("“lnog hair” → “long hair” (not a Danbooru tag)")
    expect(fixes).to_contain_text("drop “1girl” (a repeat)")
    expect(fixes).to_contain_text("drop “8k” (not trained with)")

    page.locator("#fix_all").click()
    expect(prompt).to_have_value("1girl, long hair, smile", timeout=30_000)
    expect(flags).not_to_contain_text("Check:", timeout=30_000)
    expect(fixes).to_be_hidden()

    page.locator("#fix_undo").click()
    expect(prompt).to_have_value("1girl, lnog hair, smile, 1girl, 8k", timeout=30_000)
    expect(flags).to_contain_text("repeat 1girl", timeout=30_000)


def test_one_click_applies_one_fix(page):
    prompt = type_prompt(page, "hair long, 1girl, masterpiece")
    fixes = page.locator("#fix_list")
    row = fixes.get_by_text("“masterpiece” → “best quality” (not trained with)", exact=True)
    row.wait_for(timeout=30_000)
    row.click()
    expect(prompt).to_have_value("hair long, 1girl, best quality", timeout=30_000)
    expect(page.locator("#composed")).to_contain_text("unknown hair long → long hair", timeout=30_000)


def test_an_a1111_prompt_is_rewritten_for_this_model_in_the_png_info_tab(page, tmp_path):
    info = PngInfo()
    info.add_text("parameters", "(masterpiece:1.2), best_quality, 1girl, (long_hair:1.1), <lora:style:0.8>, "
                                "absurdres\nNegative prompt: lowres, worst quality, bad_hands\n"
                                "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 77, Size: 1024x1024, Model: other")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64), "white").save(path, pnginfo=info)
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#png_upload input[type=file]").set_input_files(str(path))
    expect(page.locator("#png_raw textarea")).to_have_value(re.compile("masterpiece"), timeout=30_000)
    page.locator("#png_rewrite").click()
    note = page.locator("#png_note")
    expect(note).to_contain_text("masterpiece → best quality", timeout=30_000)
    expect(note).to_contain_text("dropped <lora:style:0.8> (no such LoRA here)")
    page.locator("#send_to_generate").click()
    expect(page.locator("#prompt textarea")).to_have_value("(best quality:1.2), 1girl, (long hair:1.1)",
                                                           timeout=30_000)
    expect(page.locator("#negative_prompt textarea")).to_have_value("worst quality, bad hands")


def test_on_a_phone_the_fixes_fit_the_screen_and_fix_all_works(phone):
    prompt = type_prompt(phone, "1girl, smile, 1girl")
    expect(phone.locator("#composed")).to_contain_text("repeat 1girl", timeout=30_000)
    for elem_id in ("fix_all", "fix_list"):
        box = phone.locator(f"#{elem_id}").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    phone.locator("#fix_all").click()
    expect(prompt).to_have_value("1girl, smile", timeout=30_000)
