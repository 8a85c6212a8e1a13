"""The page in Chromium: the app served in-process as ``app.py --demo`` serves it, one Chromium per
module, and a page of its own (its own session) per test. Every test here is marked ``browser``."""

from __future__ import annotations

import pytest
from support import PHONE, chromium, make_studio, open_page


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    """The studio of ``app.py --demo``: the tiny pair with the demo banner; outputs and presets in the
    module's user folder."""
    return make_studio(tiny_pair, studio_home, demo=True)


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, app):
    """A desktop page (1400x1000) on the live app; no page error may happen while the test runs."""
    page = open_page(browser, app.url)
    yield page
    assert page.errors == []
    page.context.close()


@pytest.fixture
def phone(browser, app):
    """A phone-sized page (390x844) on the live app."""
    page = open_page(browser, app.url, PHONE)
    yield page
    page.context.close()
