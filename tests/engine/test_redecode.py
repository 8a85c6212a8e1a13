"""Re-decoding a finished image: only the decoder runs on the stored stage-C latent (same composition),
the decoder seed decides its noise, and the studio keeps the latent beside each PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support import SMALL, make_studio, pixels

from sote_ui.core.errors import InputError
from sote_ui.core.metadata import parse_parameters, read_parameters
from sote_ui.core.outputs import latent_path, load_latent
from sote_ui.core.request import build_request
from sote_ui.engine.latents import latent_record, prior_output

REQUEST = {**SMALL, "seed": 321, "decoder_steps": 2}


def first(engine, **overrides):
    result = engine.generate(build_request({**REQUEST, **overrides}))
    return result.images[0]


def test_the_same_latent_and_no_decoder_seed_gives_the_same_image_without_a_prior(engine):
    original = first(engine)
    record = latent_record(original.prior, {})
    engine.clear_caches()
    result = engine.redecode(original.request, record)
    assert result.counters.prior_runs == 0 and result.counters.prior_steps == 0
    assert result.counters.decoder_runs == 1 and result.counters.decoder_steps == 2
    assert np.array_equal(pixels(result), pixels(original.image))


def test_the_decoder_seed_decides_the_noise(engine):
    original = first(engine)
    record = latent_record(original.prior, {})
    seven = engine.redecode(original.request, record, decoder_seed=7)
    again = engine.redecode(original.request, record, decoder_seed=7)
    eight = engine.redecode(original.request, record, decoder_seed=8)
    assert np.array_equal(pixels(seven), pixels(again))
    assert not np.array_equal(pixels(seven), pixels(eight))
    assert not np.array_equal(pixels(seven), pixels(original.image))
    assert "Decoder seed: 7" in seven.images[0].parameters


def test_more_decoder_steps_run_only_the_decoder(engine):
    original = first(engine)
    before = engine.counters.snapshot()
    result = engine.redecode(build_request({**REQUEST, "decoder_steps": 4, "decoder_cfg": 1.5}),
                             latent_record(original.prior, {}), decoder_seed=3)
    ran = engine.counters.since(before)
    assert (ran.prior_runs, ran.decoder_runs, ran.decoder_steps) == (0, 1, 4)
    assert result.images[0].request.decoder_steps == 4 and result.images[0].request.decoder_cfg == 1.5


def test_the_record_round_trips_the_latent(engine):
    original = first(engine)
    back = prior_output(latent_record(original.prior, {"a": "b"}))
    assert back.latents.dtype == original.prior.latents.dtype
    assert np.array_equal(back.latents.cpu().numpy(), original.prior.latents.cpu().numpy())
    assert np.array_equal(back.generator_state.numpy(), original.prior.generator_state.numpy())


@pytest.fixture
def studio(tiny_pair, tmp_path, loaded_engine):
    loaded_engine.clear_caches()
    studio = make_studio(tiny_pair, tmp_path)
    studio._engine = loaded_engine  # the session's engine, loaded once
    yield studio
    studio.close()


def params(path) -> dict:
    with Image.open(path) as image:
        return parse_parameters(read_parameters(image))


def test_the_studio_keeps_each_latent_and_redecodes_a_png(studio):
    from safetensors.torch import load_file

    shots, _ = studio.generate({**REQUEST})
    png = shots[0].path
    stored = load_file(str(latent_path(png)))
    assert tuple(stored["latents"].shape) == (1, 16, 6, 6)  # 256x256 -> ceil(256 / 42.67) = 6
    runs = studio.engine.counters.prior_runs
    shot, report = studio.redecode(png, decoder_seed=5, decoder_steps=3, decoder_cfg=1.5)
    assert studio.engine.counters.prior_runs == runs
    assert report["prior_runs"] == 0 and report["decoder_steps_run"] == 3
    values = params(shot.path)
    assert values["decoder_steps"] == 3 and values["decoder_cfg"] == 1.5 and values["seed"] == 321
    assert values["not_applied"]["Decoder seed"] == "5"
    assert values["not_applied"]["Re-decoded from"] == shot_name(png)
    assert not np.array_equal(pixels(shot.path), pixels(png))
    # The new PNG can be re-decoded in turn: it has its own copy of the latent.
    assert load_latent(shot.path) is not None
    same, _ = studio.redecode(shot.path, decoder_seed=5, decoder_steps=3, decoder_cfg=1.5)
    assert np.array_equal(pixels(same.path), pixels(shot.path))


def shot_name(path) -> str:
    from pathlib import Path

    return Path(path).name


def test_a_png_without_a_stored_latent_gets_one_line(studio, tmp_path):
    other = tmp_path / "outputs" / "elsewhere.png"
    other.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64)).save(other)
    with pytest.raises(InputError, match="^elsewhere.png has no stored composition"):
        studio.redecode(str(other), decoder_seed=1)
    shots, _ = studio.generate({**REQUEST})
    with pytest.raises(InputError, match="decoder_steps"):
        studio.redecode(shots[0].path, decoder_steps=0)
    with pytest.raises(InputError, match="^decoder seed must be a whole number, got 'abc'$"):
        studio.redecode(shots[0].path, decoder_seed="abc")
    with pytest.raises(InputError, match="^decoder seed must be -1"):
        studio.redecode(shots[0].path, decoder_seed=-5)


def test_an_image_finished_from_a_stopped_prior_re_decodes_from_what_the_prior_reached(engine):
    from sote_ui.core.errors import Cancelled

    asked = []

    def progress(p):
        asked.append(p)

    with pytest.raises(Cancelled) as stopped:
        engine.generate_many([build_request({**REQUEST, "prior_steps": 4})], on_progress=progress,
                             should_finish=lambda: bool(asked) and asked[-1].stage == "prior" and asked[-1].step >= 2)
    finished = stopped.value.images[0]
    assert finished.prior_stopped_at == (2, 4)
    again = engine.redecode(finished.request, latent_record(finished.prior, {}))
    assert again.counters.prior_runs == 0
    assert np.array_equal(pixels(again), pixels(finished.image))
