"""The prompt fixer for scripts: the /fix_prompt endpoint and ``python -m sote_ui fix-prompt``, and the
PNG info tab's rewrite of an A1111 prompt (served in-process on the tiny pair)."""

from __future__ import annotations

import json

import pytest

from sote_ui.cli import main

PROMPT = "masterpiece, 1girl, lnog hair, 1girl, (blue_eyes:1.2)"


def test_fix_prompt_endpoint_answers_the_fixed_text_and_the_findings(client):
    fixed, findings = client.predict(PROMPT, api_name="/fix_prompt")
    assert fixed == "best quality, 1girl, long hair, (blue eyes:1.2)"
    assert [(f["kind"], f["tag"], f["action"]) for f in findings] == [
        ("untrained", "masterpiece", "replace"), ("unknown", "lnog hair", "replace"),
        ("duplicate", "1girl", "drop"), ("spelling", "blue_eyes", "replace")]
    assert findings[1]["options"][0] == "long hair"
    assert "did you mean `long hair`" in findings[1]["message"]


def test_fix_prompt_on_a_clean_prompt_finds_nothing(client):
    fixed, findings = client.predict("very aesthetic, 1girl, smile", api_name="/fix_prompt")
    assert (fixed, findings) == ("very aesthetic, 1girl, smile", [])


def test_fix_prompt_counts_chunks_with_the_loaded_encoder(client):
    long = ", ".join(f"tag number {i}" for i in range(120))  # unknown tags with nothing close, past 3 chunks
    fixed, findings = client.predict(long, api_name="/fix_prompt")
    past = [f["tag"] for f in findings if f["kind"] == "past_chunks"]
    assert past and past[-1] == "tag number 119"
    assert fixed == ", ".join(f"tag number {i}" for i in range(120 - len(past)))


def test_the_cli_prints_the_fixed_prompt_then_each_finding(capsys):
    assert main(["fix-prompt", PROMPT]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "best quality, 1girl, long hair, (blue eyes:1.2)"
    assert lines[1:] == ["untrained: `masterpiece` is not a tag the model was trained with; its quality tag is "
                         "`best quality`",
                         "unknown: `lnog hair` is not a Danbooru tag: did you mean `long hair`?",
                         "duplicate: `1girl` is already in the prompt: drop the repeat",
                         "spelling: `blue_eyes`: the model was trained with spaces: `blue eyes`"]
    assert main(["fix-prompt", "--json", "1girl, 1girl"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["fixed"] == "1girl" and answer["findings"][0]["kind"] == "duplicate"


def test_the_flags_line_never_waits_for_the_lookups(monkeypatch):
    from sote_ui.core import fixer
    from sote_ui.ui.generate.prompt_tools import flags_line

    fixer.vocabulary()  # built
    assert flags_line("1girl, lnog hair, 1girl") == "**Check**: unknown `lnog hair` → `long hair` · repeat `1girl`"
    assert flags_line("1girl, long ha") == ""  # still being typed
    monkeypatch.setattr(fixer, "_vocabulary", None)  # as at start, while they are built in the background
    monkeypatch.setattr(fixer, "vocabulary", lambda: pytest.fail("the line waited for the lookups"))
    assert flags_line("1girl, lnog hair, 1girl") == ""
