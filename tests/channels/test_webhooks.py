"""Form decoding: the gateway's own decoder reads fields exactly as urllib's parse_qsl
(keep_blank_values=True) does, whatever the bytes; its bytes variant (Kannel's fields)
keeps every byte that was sent."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.channels.forms import MAX_FIELDS, decode_form, decode_form_bytes

PIECES = st.sampled_from(["&", "=", "+", "%", "%2", "%20", "%2B", "%26", "%3D", "%C3%A9",
                          "%E2%82", "%ZZ", "a", "text", "1*2", "é", "\x00", " ", ";", "&&"])


@pytest.mark.parametrize("body, fields", [
    ("sessionId=ATUid_1&text=1*2&phoneNumber=%2B22370000001",
     [("sessionId", "ATUid_1"), ("text", "1*2"), ("phoneNumber", "+22370000001")]),
    ("text=Route+barr%C3%A9e+5000F", [("text", "Route barrée 5000F")]),
    ("text=&empty&=x", [("text", ""), ("empty", ""), ("", "x")]),
    ("text=%E2%82", [("text", "\ufffd")]),  # a cut UTF-8 sequence is replaced, not an error
    ("", []),
])
def test_forms_decode_as_africas_talking_sends_them(body: str, fields: list[tuple[str, str]]
                                                    ) -> None:
    assert decode_form(body) == fields


@given(st.lists(PIECES | st.text(max_size=8), max_size=40).map("".join))
def test_decoding_matches_urllib(text: str) -> None:
    assert decode_form(text, max_fields=None) == parse_qsl(text, keep_blank_values=True)


def test_too_many_fields_are_refused() -> None:
    assert len(decode_form("a=1&" * (MAX_FIELDS - 1) + "a=1")) == MAX_FIELDS
    with pytest.raises(ValueError):
        decode_form("a=1&" * MAX_FIELDS + "a=1")


@given(st.lists(PIECES | st.text(max_size=8), max_size=40).map("".join))
def test_bytes_decoding_keeps_every_byte(text: str) -> None:
    raw = text.encode("utf-8")
    # latin-1 maps each byte to one character and back: parse_qsl then keeps the bytes
    expected = [(name.encode("latin-1").decode("utf-8", "replace"), value.encode("latin-1"))
                for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True,
                                             encoding="latin-1")]
    assert decode_form_bytes(raw, max_fields=None) == expected


def test_raw_utf16_text_survives_bytes_decoding() -> None:
    fields = dict(decode_form_bytes(b"text=%00A%00R%00R%00%CA%00T&charset=UTF-16BE"))
    assert fields["text"].decode("utf-16-be") == "ARR\u00caT"
    with pytest.raises(ValueError):
        decode_form_bytes(b"a=1&" * MAX_FIELDS + b"a=1")
