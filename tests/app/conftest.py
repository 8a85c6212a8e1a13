"""Fixtures shared by the command-line tests of tests/app."""

from __future__ import annotations

import pytest

from sote_ui.cli import main


@pytest.fixture
def model_flags(tiny_pair):
    """The CLI flags that load the tiny pair in fp32 on the CPU."""
    prior, decoder = tiny_pair
    return ["--prior", str(prior), "--decoder", str(decoder), "--mode", "fp32", "--device", "cpu"]


@pytest.fixture
def cli(capsys, tmp_path, monkeypatch):
    """Run main([...]) and return (exit code, stdout, stderr); presets go to a private folder."""
    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path / "home"))

    def call(*argv: str):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors exit through SystemExit
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return call
