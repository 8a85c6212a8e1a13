"""The Spaces branch, exercised by simulating a Space's environment."""

from __future__ import annotations

import pickle
import sys
import types

import pytest
from support import SMALL, make_studio

from sote_ui.core.errors import InputError
from sote_ui.core.request import build_request
from sote_ui.service import hosting, jobs
from sote_ui.service.studio import Studio, StudioConfig


@pytest.fixture
def fake_spaces(monkeypatch):
    """A stand-in for the `spaces` package that records how GPU calls are wrapped.

    Like ZeroGPU, it pickles the arguments on their way to the GPU worker.
    """
    calls = []
    module = types.ModuleType("spaces")

    def GPU(duration=60):
        def wrap(fn):
            def run(*args):
                seconds = duration(*args) if callable(duration) else duration
                calls.append(seconds)
                return fn(*pickle.loads(pickle.dumps(args)))

            return run

        return wrap

    module.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", module)
    return calls


def test_not_on_spaces_changes_nothing(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    config = StudioConfig(outputs="outputs")
    assert hosting.for_environment(config) is config
    assert hosting.server_name(None) == "127.0.0.1"
    assert jobs.gpu_runner() is None


def test_spaces_binds_everywhere_and_limits_requests(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/sote-studio")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delenv("SOTE_OUTPUTS", raising=False)
    config = hosting.for_environment(StudioConfig(outputs="outputs", presets_dir="/tmp/presets"))
    assert hosting.server_name(None) == "0.0.0.0"
    assert hosting.server_name("127.0.0.1") == "127.0.0.1"
    assert config.outputs is None and config.presets_dir is None
    assert config.limits.max_count == 4
    with pytest.raises(InputError, match="count must be between 1 and 4"):
        build_request({"prompt": "x", "count": 5}, limits=config.limits)
    with pytest.raises(InputError, match="budget"):
        build_request({"prompt": "x", "width": 2048, "height": 2048}, limits=config.limits)
    assert build_request({"prompt": "x", "width": 1024, "height": 1536}, limits=config.limits).width == 1024


def test_spaces_refuses_saving_shared_presets(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACE_ID", "someone/sote-studio")
    studio = Studio(hosting.for_environment(StudioConfig(presets_dir=str(tmp_path))))
    with pytest.raises(InputError, match="turned off"):
        studio.presets.save("mine", {"prompt": "x"})
    assert list(tmp_path.iterdir()) == []


def test_zero_gpu_wraps_the_gpu_call_with_a_computed_duration(monkeypatch, fake_spaces, tiny_pair, tmp_path):
    monkeypatch.setenv("SPACE_ID", "someone/sote-studio")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert hosting.zero_gpu()
    config = hosting.for_environment(StudioConfig())
    assert (config.mode, config.device) == ("bf16", "cuda")  # models sit on cuda from the start
    # Run the wrapped call on the CPU engine: the wrapper, not the device, is under test here.
    studio = make_studio(tiny_pair, tmp_path, outputs=None, presets_dir=None)
    assert studio.on_zero_gpu
    small = {**SMALL, "prompt": "1girl", "prior_steps": 2, "seed": 3}
    shots, report = studio.generate(small)
    assert report["seeds"] == [3] and len(shots) == 1
    assert fake_spaces == [jobs.gpu_seconds([build_request(small)])]
    assert not str(shots[0].path).startswith(str(tmp_path))  # kept in the temporary folder only


def test_gpu_seconds_grows_with_work():
    base = build_request({"prompt": "x"})
    more_steps = build_request({"prompt": "x", "prior_steps": 80})
    bigger = build_request({"prompt": "x", "width": 2048, "height": 1152})
    more_images = build_request({"prompt": "x", "count": 4})
    seconds = jobs.gpu_seconds([base])
    assert seconds < jobs.gpu_seconds([more_steps])
    assert seconds < jobs.gpu_seconds([bigger])
    assert seconds < jobs.gpu_seconds([more_images])
    assert jobs.gpu_seconds([more_images] * 50) == jobs.MAX_GPU_SECONDS


def test_spaces_fix_the_memory_mode_for_all_visitors(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACE_ID", "someone/sote-studio")
    studio = Studio(hosting.for_environment(StudioConfig(presets_dir=str(tmp_path))))
    with pytest.raises(InputError, match="fixed on this server"):
        studio.set_mode("fp8")
