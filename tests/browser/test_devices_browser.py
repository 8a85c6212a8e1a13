"""Two CPU engines behind one queue (``--devices cpu,cpu``) as people see it: two pages' runs at once, each
summary naming the device that ran it, and the status line listing both devices."""

from __future__ import annotations

import re

import pytest
from support import make_studio, open_page, small_settings


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    return make_studio(tiny_pair, studio_home, device=None, devices=["cpu", "cpu"])


def test_two_pages_run_at_once_and_each_summary_names_its_device(browser, app):
    from playwright.sync_api import expect

    pages = [open_page(browser, app.url), open_page(browser, app.url)]
    try:
        status = pages[0].locator("#status")
        expect(status).to_contain_text("ready on 2 devices: cpu #1 CPU (")
        expect(status).to_contain_text("; cpu #2 CPU (")
        for page in pages:
            small_settings(page, prior_steps=60)
        for page in pages:  # the second starts while the first's 60 prior steps run
            page.locator("#generate").click()
        summaries = [page.locator("#summary") for page in pages]
        for summary in summaries:
            expect(summary).to_contain_text("1 image in ", timeout=180_000)
        texts = [summary.inner_text() for summary in summaries]
        assert sorted(re.search(r" · on (cpu #\d)", text).group(1) for text in texts) == ["cpu #1", "cpu #2"], texts
        assert [page.errors for page in pages] == [[], []]
    finally:
        for page in pages:
            page.context.close()
