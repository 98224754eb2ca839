"""escape_text / unescape_text: the v2.5.1 escape sequences, both ways, with any encoding characters."""

from __future__ import annotations

import pytest

from exporters.hl7_escape import EncodingCharacters, escape_text, unescape_text


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a|b", "a\\F\\b"),
        ("a^b", "a\\S\\b"),
        ("a&b", "a\\T\\b"),
        ("a~b", "a\\R\\b"),
        ("a\\b", "a\\E\\b"),
        ("a\nb", "a\\.br\\b"),
        ("a\r\nb\rc", "a\\.br\\b\\.br\\c"),
        ("\\F\\", "\\E\\F\\E\\"),
        ("plain text.", "plain text."),
    ],
)
def test_each_special_character_has_its_sequence(text: str, escaped: str) -> None:
    assert escape_text(text) == escaped


@pytest.mark.parametrize(
    "text",
    ["| ^ & ~ \\", "\\E\\", "\\\\", "C:\\Hx\\N", "line one\nline two", "ends with \\", "\\.br\\ literal", ""],
)
def test_round_trip(text: str) -> None:
    assert unescape_text(escape_text(text)) == text


def test_other_encoding_characters_are_honoured() -> None:
    custom = EncodingCharacters(field="#", component="$", repetition="*", escape="!", subcomponent="%")

    escaped = escape_text("a#b$c*d!e%f|g", custom)

    assert escaped == "a!F!b!S!c!R!d!E!e!T!f|g"
    assert unescape_text(escaped, custom) == "a#b$c*d!e%f|g"


def test_unescape_drops_highlighting_decodes_hex_and_keeps_unknown_sequences() -> None:
    assert unescape_text("\\H\\bold\\N\\ \\X4869\\ \\Zcustom\\") == "bold Hi \\Zcustom\\"
