"""Tag suggestions: ranking, aliases, the model's own tags, escaping, on the shipped Danbooru list."""

from __future__ import annotations

import io

import pytest

from sote_ui.core import tagindex
from sote_ui.core.emphasis import parse_emphasis
from sote_ui.core.tagindex import TagIndex, escape_tag, query_of, suggest, unescape_tag

SMALL_CSV = """\
long_hair,0,4350743,"/lh,longhair"
long_sleeves,0,1568684,long_sleeve
low_twintails,0,60000,
longhorn,4,34,
kanzaki_ranko_(cosplay),0,35,
wlop,1,365,
^_^,0,18000,
"""


@pytest.fixture(scope="module")
def small_index():
    return TagIndex.from_text(io.StringIO(SMALL_CSV))


def texts(results):
    return [s.text for s in results]


def test_prefix_matches_ranked_by_post_count(small_index):
    assert texts(small_index.suggest("lo")) == ["low quality, ", "long hair, ", "long sleeves, ",
                                                 "low twintails, ", "longhorn, "]


def test_model_tags_are_pinned_first_when_they_match(small_index):
    results = small_index.suggest("low")
    assert results[0].text == "low quality, " and results[0].category == "quality"
    assert texts(results)[1:] == ["low twintails, "]
    assert small_index.suggest("new")[0].category == "date"
    assert small_index.suggest("explicit")[0].tag == "explicit nsfw"


def test_aliases_find_the_tag_and_say_which_alias_matched(small_index):
    (only,) = small_index.suggest("/lh")
    assert (only.text, only.alias, only.count) == ("long hair, ", "/lh", 4350743)
    results = small_index.suggest("longh")
    assert texts(results) == ["long hair, ", "longhorn, "]  # the alias of a big tag beats a small name match
    assert results[0].alias == "longhair"


def test_a_tag_matching_by_name_and_alias_is_listed_once(small_index):
    assert texts(small_index.suggest("long s")) == ["long sleeves, "]
    assert small_index.suggest("long s")[0].alias == ""


def test_typed_text_is_normalised(small_index):
    assert texts(small_index.suggest("Long_H")) == ["long hair, "]
    assert texts(small_index.suggest("kanzaki ranko \\(")) == ["kanzaki ranko \\(cosplay\\), "]
    assert small_index.suggest("   ") == [] and small_index.suggest("zzz") == []


def test_artist_category_filter_inserts_the_bare_name(small_index):
    (only,) = small_index.suggest("w", category=tagindex.ARTIST)
    assert (only.text, only.category) == ("wlop", "artist")
    assert small_index.suggest("lo", category=tagindex.ARTIST) == []


def test_limit(small_index):
    assert len(small_index.suggest("l", limit=2)) == 2


def test_escaping_writes_tags_as_the_model_was_trained():
    assert escape_tag("kanzaki_ranko_(cosplay)") == "kanzaki ranko \\(cosplay\\)"
    assert escape_tag("long_hair") == "long hair"
    assert escape_tag("^_^") == "^_^" and escape_tag("o_o") == "o_o"  # emoticons keep their underscore
    assert escape_tag(":)") == ":\\)"
    assert escape_tag("[sonic]") == "\\[sonic\\]"
    assert unescape_tag(escape_tag("kanzaki_ranko_(cosplay)")) == "kanzaki ranko (cosplay)"


def test_an_escaped_tag_is_plain_text_at_weight_one_for_the_emphasis_parser():
    text = escape_tag("kanzaki_ranko_(cosplay)") + ", " + escape_tag(":)")
    assert parse_emphasis(text) == [("kanzaki ranko (cosplay), :)", 1.0)]


def test_query_is_the_tag_being_typed():
    assert query_of("1girl, solo, long h") == "long h"
    assert query_of("1girl,\n(long h") == "long h"
    assert query_of("{red|bl") == "bl"
    assert query_of("(long hair:1.") == "long hair"
    assert query_of("a, ") == ""


def test_shipped_list_long_h_suggests_long_hair_first():
    results = suggest("long h")
    assert results[0].text == "long hair, "
    assert results[0].category == "general" and results[0].count > 1_000_000
    counts = [s.count for s in results if not s.alias]
    assert counts == sorted(counts, reverse=True)


def test_shipped_list_aliases_and_escapes():
    assert suggest("/lh")[0].tag == "long_hair"
    assert suggest("longhair")[0].text == "long hair, "
    assert "kanzaki ranko \\(cosplay\\), " in texts(suggest("kanzaki ranko", limit=20))
    assert suggest("best")[0].text == "best quality, "
    assert all(s.category == "artist" for s in suggest("a", category=tagindex.ARTIST))


def test_the_suggestions_the_page_gets_and_an_unknown_category_refused():
    from sote_ui.core.errors import InputError
    from sote_ui.core.suggestions import suggest_tags

    first = suggest_tags("long h", "")[0]
    assert (first["text"], first["tag"], first["category"]) == ("long hair, ", "long_hair", "general")
    assert all(row["category"] == "artist" for row in suggest_tags("wlo", "artist"))
    with pytest.raises(InputError, match="category must be"):
        suggest_tags("a", "nope")
