"""Live previews and drafts through the served app, as a script (gradio_client) sees them.

The module serves one app (``live_app``: a studio and an engine of its own); each test starts with
its engine's caches empty."""

from __future__ import annotations

import math

import pytest
from PIL import Image
from support import SMALL

PREVIEWS = {**SMALL, "prior_steps": 8}  # 8 prior steps: previews at steps 4 and 8
LATENT_SIDE = math.ceil(256 / 42.67)


def test_previews_stream_before_the_final_images(client):
    job = client.submit(**{**PREVIEWS, "seed": 501}, preview="fast", api_name="/generate")
    final = job.result(timeout=300)
    outputs = job.outputs()
    previews = [out[-1] for out in outputs[:-1]]
    assert len(previews) == 2  # prior steps 4 and 8 of 8
    # Each update carries the preview's file and says which step it shows.
    assert [p["label"] for p in previews] == ["Live preview: image 1, stage C step 4/8",
                                              "Live preview: image 1, stage C step 8/8"]
    for preview in previews:
        assert Image.open(preview["value"]).size == (LATENT_SIDE * 8, LATENT_SIDE * 8)
    images, summary, report, status, live = final
    assert [Image.open(item["image"]).size for item in images] == [(256, 256)]
    assert live["visible"] is False and live["value"] is None  # the preview makes way for the final image
    assert report["seeds"] == [501]


def test_previews_can_be_switched_off(app, client):
    before = app.studio.engine.counters.previews
    job = client.submit(**{**PREVIEWS, "seed": 502}, preview="off", api_name="/generate")
    job.result(timeout=300)
    assert len(job.outputs()) == 1 and app.studio.engine.counters.previews == before


def test_an_unknown_preview_kind_is_refused_with_a_message(client):
    with pytest.raises(Exception, match="'sharp'.*not in the list of choices"):
        client.predict(**{**PREVIEWS, "seed": 503}, preview="sharp", api_name="/generate")


def test_draft_then_finish_only_the_picked_seeds(app, client):
    engine = app.studio.engine
    before = engine.counters.snapshot()
    drafts, picked, note = client.predict(**{**PREVIEWS, "prior_steps": 3, "seed": 600}, count=3, preview="fast",
                                          api_name="/draft")
    drafted = engine.counters.since(before)
    assert [item["caption"] for item in drafts] == ["seed 600", "seed 601", "seed 602"]
    assert Image.open(drafts[0]["image"]).size == (LATENT_SIDE * 8, LATENT_SIDE * 8)
    assert (drafted.prior_runs, drafted.decoder_steps) == (3, 0)
    assert "no decoder step run" in note
    # Finishing is a page action bound to this browser session's drafts; a script finishes a draft by
    # generating its seed with the same settings, which reuses the cached prior.
    middle = engine.counters.snapshot()
    _, _, report, _, _ = client.predict(**{**PREVIEWS, "prior_steps": 3, "seed": 601}, preview="off",
                                        api_name="/generate")
    finished = engine.counters.since(middle)
    assert (finished.prior_runs, finished.prior_cache_hits, finished.decoder_steps) == (0, 1, 2)
    assert report["prior_reused"] == [True]


def test_finishing_drafts_runs_each_seed_once_and_no_more_than_a_run_may(app):
    from sote_ui.core.errors import InputError

    studio = app.studio
    values = {**PREVIEWS, "prior_steps": 2, "seed": 610}
    shots, report = studio.generate(values, seeds=[611, 611, 611, 612, 611])
    assert report["seeds"] == [611, 612] and len(shots) == 2
    limit = studio.config.limits.max_count
    before = studio.engine.counters.snapshot()
    with pytest.raises(InputError, match=f"{limit + 1} seeds to finish; at most {limit} at once"):
        studio.generate(values, seeds=list(range(620, 620 + limit + 1)) * 2)
    assert studio.engine.counters.since(before).prior_steps == 0
