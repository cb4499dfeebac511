"""The EchoKit wire protocol: ServerEvent MessagePack codec (docs/protocol.md#server-events) and
client commands (docs/protocol.md#client-commands).

Byte vectors are those of docs/protocol.md#byte-examples; property tests compare against an
independent encoder (msgpack-python packing the structure that document describes).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from echokit_fast.devices.echokit.protocol import (
    SERVER_EVENT_VARIANTS,
    decode_event,
    encode_audio_chunk,
    encode_event,
    parse_client_command,
)

# Deterministic property tests (fixed derandomized seed, no example database).
PROPS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# docs/protocol.md#the-events: variants in declaration order and their fields in serialization
# order.
FIELDS: dict[str, tuple[str, ...]] = {
    "HelloStart": (),
    "HelloChunk": ("data",),
    "HelloEnd": (),
    "ASR": ("text",),
    "Action": ("action",),
    "Choices": ("message", "items"),
    "StartAudio": ("text",),
    "AudioChunk": ("data",),
    "DisplayText": ("text",),
    "AudioChunkWithVowel": ("data", "vowel"),
    "EndAudio": (),
    "StartVideo": (),
    "EndVideo": (),
    "EndResponse": (),
    "EndVad": (),
}
UNIT = [name for name, fields in FIELDS.items() if not fields]

# docs/protocol.md#byte-examples, verbatim.
SPEC_VECTORS: list[tuple[Any, str]] = [
    ("HelloStart", "aa 48 65 6c 6c 6f 53 74 61 72 74"),
    ("HelloEnd", "a8 48 65 6c 6c 6f 45 6e 64"),
    ("EndAudio", "a8 45 6e 64 41 75 64 69 6f"),
    ("EndResponse", "ab 45 6e 64 52 65 73 70 6f 6e 73 65"),
    ("EndVad", "a6 45 6e 64 56 61 64"),
    ({"ASR": {"text": "hi"}}, "81 a3 41 53 52 91 a2 68 69"),
    ({"ASR": {"text": ""}}, "81 a3 41 53 52 91 a0"),
    ({"Action": {"action": "ByeBye"}}, "81 a6 41 63 74 69 6f 6e 91 a6 42 79 65 42 79 65"),
    (
        {"StartAudio": {"text": "Hello."}},
        "81 aa 53 74 61 72 74 41 75 64 69 6f 91 a6 48 65 6c 6c 6f 2e",
    ),
    (
        {"AudioChunk": {"data": bytes([1, 2, 3])}},
        "81 aa 41 75 64 69 6f 43 68 75 6e 6b 91 93 01 02 03",
    ),
    (
        {"AudioChunkWithVowel": {"data": bytes([200]), "vowel": 1}},
        "81 b3 41 75 64 69 6f 43 68 75 6e 6b 57 69 74 68 56 6f 77 65 6c 92 91 cc c8 01",
    ),
    (
        {"HelloChunk": {"data": bytes([0, 255])}},
        "81 aa 48 65 6c 6c 6f 43 68 75 6e 6b 91 92 00 cc ff",
    ),
    (
        {"Choices": {"message": "m", "items": ["a", "b"]}},
        "81 a7 43 68 6f 69 63 65 73 92 a1 6d 92 a1 61 a1 62",
    ),
    ({"DisplayText": {"text": "ok"}}, "81 ab 44 69 73 70 6c 61 79 54 65 78 74 91 a2 6f 6b"),
]


def structure(event: Any) -> Any:
    """What docs/protocol.md says the wire carries: unit -> str, struct -> {name: [fields...]},
    byte fields as lists of ints (what msgpack-python packs / unpacks)."""
    if isinstance(event, str):
        return event
    ((name, fields),) = event.items()
    values = []
    for f in FIELDS[name]:
        v = fields[f]
        values.append(list(bytes(v)) if f == "data" else v)
    return {name: values}


def normalized(event: Any) -> Any:
    """The event as decode_event returns it (byte fields as bytes, items as a list)."""
    if isinstance(event, str):
        return event
    ((name, fields),) = event.items()
    out = {}
    for f, v in fields.items():
        if f == "data":
            out[f] = bytes(v)
        elif f == "items":
            out[f] = list(v)
        else:
            out[f] = v
    return {name: out}


# --- strategies ---------------------------------------------------------------------------------

BOUNDARIES = [0, 1, 15, 16, 17, 31, 32, 33, 255, 256, 257, 65535, 65536, 65537]


def _ascii_of_len(n: int, suffix: str) -> str:
    return "x" * n + suffix


# Any Unicode scalar value (lone surrogates cannot be UTF-8; encoding rejects them, tested below).
chars = st.characters(exclude_categories=("Cs",))
texts = st.one_of(
    st.text(chars, max_size=50),
    st.text(st.characters(min_codepoint=0x80, exclude_categories=("Cs",)), max_size=20),
    # UTF-8 lengths straddling the fixstr / str8 / str16 / str32 limits (31, 255, 65535).
    st.builds(_ascii_of_len, st.sampled_from(BOUNDARIES), st.text(chars, max_size=3)),
)


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


datas = st.one_of(
    st.binary(max_size=64),
    # lengths straddling the fixarray / array16 / array32 limits (15, 65535).
    st.builds(_random_bytes, st.sampled_from(BOUNDARIES), st.integers(0, 2**32)),
)
vowels = st.integers(0, 255)


def _struct(name: str, **fields: Any) -> dict[str, dict[str, Any]]:
    return {name: fields}


events = st.one_of(
    st.sampled_from(UNIT),
    st.builds(lambda d: _struct("HelloChunk", data=d), datas),
    st.builds(lambda d: _struct("AudioChunk", data=d), datas),
    st.builds(lambda d, v: _struct("AudioChunkWithVowel", data=d, vowel=v), datas, vowels),
    st.builds(lambda t: _struct("ASR", text=t), texts),
    st.builds(lambda t: _struct("StartAudio", text=t), texts),
    st.builds(lambda t: _struct("DisplayText", text=t), texts),
    st.builds(lambda t: _struct("Action", action=t), texts),
    st.builds(
        lambda m, items: _struct("Choices", message=m, items=items),
        texts,
        st.one_of(
            st.lists(st.text(chars, max_size=10), max_size=20),
            st.lists(st.just("i"), min_size=16, max_size=16),
        ),
    ),
)


# --- spec vectors -------------------------------------------------------------------------------


def test_variant_names_match_the_spec() -> None:
    assert tuple(FIELDS) == SERVER_EVENT_VARIANTS


@pytest.mark.parametrize(("event", "hexbytes"), SPEC_VECTORS, ids=[h[:20] for _, h in SPEC_VECTORS])
def test_spec_vector_encodes(event: Any, hexbytes: str) -> None:
    assert encode_event(event) == bytes.fromhex(hexbytes)


@pytest.mark.parametrize(("event", "hexbytes"), SPEC_VECTORS, ids=[h[:20] for _, h in SPEC_VECTORS])
def test_spec_vector_decodes(event: Any, hexbytes: str) -> None:
    assert decode_event(bytes.fromhex(hexbytes)) == event


def test_full_hello_chunk_uses_array16_header() -> None:
    out = encode_event({"HelloChunk": {"data": bytes(2048)}})
    assert out[:16] == bytes.fromhex("81 aa 48 65 6c 6c 6f 43 68 75 6e 6b 91 dc 08 00")
    assert out[16:] == bytes(2048)  # 2048 zero fixints
    assert len(out) == 16 + 2048


def test_forty_char_text_uses_str8_header() -> None:
    out = encode_event({"ASR": {"text": "a" * 40}})
    assert out == bytes.fromhex("81 a3 41 53 52 91 d9 28") + b"a" * 40


def test_vowel_and_data_bytes_above_127_use_uint8() -> None:
    out = encode_event({"AudioChunkWithVowel": {"data": bytes([127, 128]), "vowel": 200}})
    assert out.endswith(bytes.fromhex("92 92 7f cc 80 cc c8"))


# --- properties ---------------------------------------------------------------------------------


@PROPS
@given(events)
def test_round_trip(event: Any) -> None:
    assert decode_event(encode_event(event)) == normalized(event)


@PROPS
@given(events)
def test_matches_independent_msgpack_encoder(event: Any) -> None:
    """msgpack-python packs the documented structure with the same smallest-form rules."""
    encoded = encode_event(event)
    assert msgpack.packb(structure(event)) == encoded
    assert msgpack.unpackb(encoded) == structure(event)


@PROPS
@given(datas, st.one_of(st.none(), vowels), st.sampled_from([bytes, bytearray, memoryview]))
def test_audio_fast_path_is_byte_identical(data: bytes, vowel: int | None, kind: type) -> None:
    if vowel is None:
        generic = encode_event({"AudioChunk": {"data": data}})
    else:
        generic = encode_event({"AudioChunkWithVowel": {"data": data, "vowel": vowel}})
    assert encode_audio_chunk(kind(data), vowel) == generic
    assert decode_event(encode_audio_chunk(data, vowel)) == (
        {"AudioChunk": {"data": data}}
        if vowel is None
        else {"AudioChunkWithVowel": {"data": data, "vowel": vowel}}
    )


@PROPS
@given(events)
def test_every_strict_prefix_is_rejected_as_truncated(event: Any) -> None:
    encoded = encode_event(event)
    cuts = (
        range(1, len(encoded)) if len(encoded) < 200 else [1, len(encoded) // 2, len(encoded) - 1]
    )
    for cut in cuts:
        with pytest.raises(ValueError, match="truncated"):
            decode_event(encoded[:cut])


@PROPS
@given(events, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_rejected(event: Any, extra: bytes) -> None:
    with pytest.raises(ValueError, match=rf"{len(extra)} trailing byte"):
        decode_event(encode_event(event) + extra)


def test_byte_fields_accept_any_byte_buffer() -> None:
    raw = bytes(range(256))
    expected = encode_event({"AudioChunk": {"data": raw}})
    strided = memoryview(bytes(b for x in raw for b in (x, 0)))[::2]  # non-contiguous
    for data in (bytearray(raw), memoryview(raw), strided):
        assert encode_event({"AudioChunk": {"data": data}}) == expected
        assert encode_audio_chunk(data) == expected
        assert decode_event(bytearray(expected)) == {"AudioChunk": {"data": raw}}
        assert decode_event(memoryview(expected)) == {"AudioChunk": {"data": raw}}


def test_concurrent_large_encodes_from_threads() -> None:
    """Large payloads are encoded with the GIL released; results must stay exact."""
    rng = random.Random(7)
    chunks = [rng.randbytes(16000) for _ in range(32)]
    with ThreadPoolExecutor(4) as pool:
        fast = list(pool.map(encode_audio_chunk, chunks))
        generic = list(pool.map(lambda d: encode_event({"AudioChunk": {"data": d}}), chunks))
        decoded = list(pool.map(decode_event, fast))
    assert fast == generic == [msgpack.packb({"AudioChunk": [list(c)]}) for c in chunks]
    assert decoded == [{"AudioChunk": {"data": c}} for c in chunks]


# --- tolerant decoding (what the firmware's rmp-serde from_slice accepts) ------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        # byte field as MessagePack bin
        ({"AudioChunk": [b"\x01\xff"]}, {"AudioChunk": {"data": b"\x01\xff"}}),
        ({"HelloChunk": [bytes(300)]}, {"HelloChunk": {"data": bytes(300)}}),
        # named-field maps, in any order, with bin or int array data
        ({"ASR": {"text": "hi"}}, {"ASR": {"text": "hi"}}),
        (
            {"AudioChunkWithVowel": {"vowel": 3, "data": b"\x05"}},
            {"AudioChunkWithVowel": {"data": b"\x05", "vowel": 3}},
        ),
        (
            {"Choices": {"items": ["x"], "message": "m"}},
            {"Choices": {"message": "m", "items": ["x"]}},
        ),
        ({"AudioChunk": {"data": [1, 2]}}, {"AudioChunk": {"data": b"\x01\x02"}}),
        # unknown named fields are skipped (serde's default, as on the device)
        ({"ASR": {"text": "a", "extra": 1}}, {"ASR": {"text": "a"}}),
        # unit variant as a 1-entry map with nil
        ({"EndVad": None}, "EndVad"),
        # ints in a wider form than needed still fit u8
        ({"AudioChunk": [[1, 2]]}, {"AudioChunk": {"data": b"\x01\x02"}}),
    ],
)
def test_decodes_tolerant_forms(wire: Any, expected: Any) -> None:
    assert decode_event(msgpack.packb(wire, use_bin_type=True)) == expected


def test_decodes_non_minimal_headers() -> None:
    # map16 with 1 entry, str8 key, array16 of 1 field, str16 text, uint16-encoded data byte
    wire = bytes.fromhex("de 0001 d9 03") + b"ASR" + bytes.fromhex("dc 0001 da 0002") + b"hi"
    assert decode_event(wire) == {"ASR": {"text": "hi"}}
    wire = bytes.fromhex("81 aa") + b"AudioChunk" + bytes.fromhex("91 92 cd 00 07 d0 05")
    assert decode_event(wire) == {"AudioChunk": {"data": b"\x07\x05"}}


# --- malformed input ----------------------------------------------------------------------------

ASR_HI = bytes.fromhex("81 a3 41 53 52 91 a2 68 69")


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"", "empty input"),
        (b"\xa3Foo", "unknown variant `Foo`"),
        (msgpack.packb({"Nope": [1]}), "unknown variant `Nope`"),
        (
            msgpack.packb({"ASR": ["hi", "x"]}),
            r"\(variant \"ASR\"\): field array has more elements",
        ),
        (msgpack.packb({"ASR": []}), "invalid length 0, expected struct variant ServerEvent::ASR"),
        (msgpack.packb({"ASR": {"txt": "a"}}), "missing field `text`"),
        (msgpack.packb({"ASR": [1]}), "invalid type: integer `1`, expected a string"),
        (msgpack.packb({"ASR": ["a"], "EndVad": None}), "exactly 1 entry.*got 2"),
        (msgpack.packb({}), "exactly 1 entry.*got 0"),
        (msgpack.packb("ASR"), r"\(variant \"ASR\"\).*expected struct variant"),
        (msgpack.packb({"AudioChunkWithVowel": [[1], 300]}), "integer `300`, expected u8"),
        (msgpack.packb({"AudioChunkWithVowel": [[1], -1]}), "integer `-1`, expected u8"),
        (msgpack.packb({"AudioChunkWithVowel": [[1]]}), "invalid length 1"),
        (msgpack.packb({"AudioChunk": [[1, 256]]}), "integer `256`, expected u8"),
        (msgpack.packb({"AudioChunk": ["abc"]}), "invalid type: string"),
        (msgpack.packb({"Choices": ["m", "a"]}), "expected a sequence"),
        (msgpack.packb(None), "expected variant identifier"),
        (b"\xc1", "marker Reserved"),
        (bytes.fromhex("81 a3 41 53 52 91 a2 ff fe"), "invalid utf8"),
        (ASR_HI[:-1], "truncated input"),
        (ASR_HI + b"\x00", "1 trailing byte.*ASR"),
        (ASR_HI + ASR_HI, "9 trailing byte"),
    ],
)
def test_decode_errors(wire: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_event(wire)


@pytest.mark.parametrize("data", ["abc", 123, None, [1, 2]])
def test_decode_rejects_non_buffers(data: Any) -> None:
    with pytest.raises(ValueError, match="must be bytes-like"):
        decode_event(data)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("Foo", 'unknown ServerEvent variant "Foo"'),
        ("asr", 'unknown ServerEvent variant "asr"'),
        ("ASR", r'"ASR" has fields \(text\)'),
        ({"HelloStart": {}}, "unit variant without fields"),
        ({"Nope": {"text": "a"}}, 'unknown ServerEvent variant "Nope"'),
        ({}, "exactly one key.*got 0"),
        ({"ASR": {"text": "a"}, "EndVad": {}}, "exactly one key.*got 2"),
        ({1: {}}, "variant name must be a str, got int"),
        (3, "must be a str .* or a one-key dict.*got int"),
        (["ASR", "hi"], "got list"),
        ({"ASR": "hi"}, "fields of ASR must be a dict"),
        ({"ASR": ["hi"]}, "fields of ASR must be a dict"),
        ({"ASR": {}}, 'ASR is missing field "text"'),
        ({"ASR": {"text": "a", "x": 1}}, "unexpected field 'x' for ASR"),
        ({"ASR": {"text": 1}}, "ASR.text must be str, got int"),
        ({"ASR": {"text": b"hi"}}, "ASR.text must be str, got bytes"),
        ({"ASR": {"text": "\udc80"}}, "ASR.text is not encodable as UTF-8"),
        ({"Action": {"text": "a"}}, "unexpected field 'text' for Action"),
        ({"AudioChunk": {"data": "abc"}}, "AudioChunk.data must be bytes-like.*got str"),
        ({"AudioChunk": {"data": [1, 2]}}, "AudioChunk.data must be bytes-like.*got list"),
        ({"HelloChunk": {}}, 'HelloChunk is missing field "data"'),
        ({"AudioChunkWithVowel": {"data": b""}}, 'missing field "vowel"'),
        (
            {"AudioChunkWithVowel": {"data": b"", "vowel": 256}},
            r"vowel must be in 0..=255.*got 256",
        ),
        ({"AudioChunkWithVowel": {"data": b"", "vowel": -1}}, r"got -1"),
        ({"AudioChunkWithVowel": {"data": b"", "vowel": 2**70}}, r"got 1180591620717411303424"),
        ({"AudioChunkWithVowel": {"data": b"", "vowel": True}}, "vowel must be an int.*got bool"),
        ({"AudioChunkWithVowel": {"data": b"", "vowel": 1.0}}, "vowel must be an int.*got float"),
        ({"Choices": {"message": "m", "items": "ab"}}, "Choices.items must be a list of str"),
        ({"Choices": {"message": "m", "items": ["a", 1]}}, r"Choices.items\[1\] must be str"),
        ({"Choices": {"items": []}}, 'missing field "message"'),
    ],
)
def test_encode_errors(event: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_event(event)


def test_encode_audio_chunk_errors() -> None:
    import array

    with pytest.raises(ValueError, match=r"vowel must be in 0..=255.*got 256"):
        encode_audio_chunk(b"", 256)
    with pytest.raises(ValueError, match=r"vowel must be an int.*got str"):
        encode_audio_chunk(b"", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"data must be bytes-like.*got str"):
        encode_audio_chunk("abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not compatible with u8"):
        encode_audio_chunk(memoryview(array.array("h", [1, 2])))


def test_items_accept_tuples() -> None:
    assert encode_event({"Choices": {"message": "m", "items": ("a", "b")}}) == bytes.fromhex(
        "81 a7 43 68 6f 69 63 65 73 92 a1 6d 92 a1 61 a1 62"
    )


# --- client commands (docs/protocol.md#client-commands) -------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"event":"StartChat"}', {"event": "StartChat"}),
        ('{"event":"StartRecord"}', {"event": "StartRecord"}),
        ('{"event":"Submit"}', {"event": "Submit"}),
        ('{"event":"Text","input":"some text"}', {"event": "Text", "input": "some text"}),
        (
            '{"event":"Text","input":"héllo \\u00e9 \\ud83d\\ude00"}',
            {"event": "Text", "input": "héllo é 😀"},
        ),
        ('{"event":"Select","index":0}', {"event": "Select", "index": 0}),
        ('{"index": 7, "event": "Select"}', {"event": "Select", "index": 7}),
        ('  {"event" : "Submit"}\n', {"event": "Submit"}),
        # keys other than the command's own are ignored, like the reference's serde parser
        ('{"event":"StartChat","extra":[1,2]}', {"event": "StartChat"}),
        # serde's internally tagged enums also take the sequence form (tag first), so does the
        # reference
        ('["Text", "hi"]', {"event": "Text", "input": "hi"}),
    ],
)
def test_parse_client_command(text: str, expected: dict[str, Any]) -> None:
    assert parse_client_command(text) == expected


@PROPS
@given(st.text(chars), st.integers(0, 2**63))
def test_parse_client_command_round_trips_json(text: str, index: int) -> None:
    import json

    assert parse_client_command(json.dumps({"event": "Text", "input": text})) == {
        "event": "Text",
        "input": text,
    }
    assert parse_client_command(json.dumps({"event": "Select", "index": index})) == {
        "event": "Select",
        "index": index,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "EOF while parsing"),
        ("garbage", "expected value at line 1 column 1"),
        ("nope", "expected ident at line 1 column 2"),
        ('{"event":"StartChat"', "EOF while parsing"),
        ('{"event":"StartChat"} x', "trailing characters"),
        ("[]", "missing field `event`"),
        ("42", "invalid type: integer `42`"),
        ('"StartChat"', "invalid type: string"),
        ('{"input":"x"}', "missing field `event`"),
        ('{"event":"Nope"}', "unknown variant `Nope`"),
        ('{"event":"startchat"}', "unknown variant `startchat`"),
        ('{"event":"Text"}', "missing field `input`"),
        ('{"event":"Text","input":1}', "invalid type: integer `1`, expected a string"),
        ('{"event":"Select"}', "missing field `index`"),
        ('{"event":"Select","index":-1}', "integer `-1`, expected usize"),
        ('{"event":"Select","index":1.5}', "floating point `1.5`, expected usize"),
        ('{"event":"Select","index":"0"}', 'string "0", expected usize'),
    ],
)
def test_parse_client_command_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^invalid client command: .*{message}"):
        parse_client_command(text)


def test_parse_client_command_rejects_non_str() -> None:
    with pytest.raises(ValueError, match=r"must be a str.*got bytes"):
        parse_client_command(b'{"event":"Submit"}')  # type: ignore[arg-type]
