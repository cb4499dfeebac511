"""The sentence splitter and grouping (docs/protocol.md#segments), with the documented cases
worked out by hand."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echokit_fast.backends.base import SpeakNow
from echokit_fast.conversation.splitter import (
    SegmentGrouper,
    SentenceSplitter,
    speakable,
    split_at_word,
    split_segments,
)


def sentences(text: str) -> list[str]:
    sp = SentenceSplitter()
    return sp.push(text) + sp.finish()


# --- sentence splitter ----------------------------------------------------------------------


def test_decimal_is_not_split():
    assert sentences("Pi is 3.14 today. Next") == ["Pi is 3.14 today. ", "Next"]


def test_abbreviations_and_domains_are_not_split():
    assert sentences("Use e.g.x and example.com now! Yes") == [
        "Use e.g.x and example.com now! ",
        "Yes",
    ]
    assert sentences("Hello.World") == ["Hello.World"]


def test_non_dot_terminator_splits_without_space():
    assert sentences("Wait!No;so?yes") == ["Wait!", "No;", "so?", "yes"]


def test_sentence_keeps_its_trailing_space_and_extra_spaces_vanish():
    sp = SentenceSplitter()
    assert sp.push("  Hi.   There") == ["Hi. "]
    assert sp.finish() == ["There"]


def test_chinese_terminators_emit_immediately():
    sp = SentenceSplitter()
    assert sp.push("你好。今天很好！吗") == ["你好。", "今天很好！"]
    assert sp.finish() == ["吗"]
    assert sentences("一；二？三") == ["一；", "二？", "三"]


def test_newline_ends_a_sentence():
    assert sentences("line one\nline two") == ["line one\n", "line two"]
    # "\n" after "." is "not a space": EWT is cleared (prev was "."), then rule 6 emits.
    assert sentences("Done.\nNext") == ["Done.\n", "Next"]


def test_terminators_inside_quotes_wait_for_the_closing_quote():
    assert sentences('He said "Stop! Now" and left. Ok') == [
        'He said "Stop! Now"',
        "and left. ",
        "Ok",
    ]


def test_curly_quotes_are_normalised_and_chinese_terminator_inside_quotes():
    assert sentences("他说“你好。”然后走了。") == ['他说"你好。"', "然后走了。"]


def test_period_right_before_closing_quote_clears_ewt():
    # Rule 1 literally: the char after "." is '"', so EWT is cleared before rule 5 looks at it.
    assert sentences('She said "Hi." Then left') == ['She said "Hi." Then left']


def test_whitespace_only_sentences_are_dropped():
    assert sentences(" \n\n  \t") == []
    assert sentences("A.\n\nB") == ["A.\n", "B"]


def test_finish_resets_the_splitter():
    sp = SentenceSplitter()
    sp.push('"open quote. x')
    sp.finish()
    assert sp.push("New. ") == ["New. "]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    text=st.text(alphabet=st.sampled_from(list('ab 1.!?;。！？；"“”\n\t')), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_sentences_do_not_depend_on_how_the_text_is_cut(text, cuts):
    sp = SentenceSplitter()
    out: list[str] = []
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        out += sp.push(text[a:b])
    out += sp.finish()
    assert out == sentences(text)

    # nothing is lost but whitespace (skipped blanks, blank-only sentences)
    def norm(t: str) -> str:
        return "".join(t.replace("“", '"').replace("”", '"').split())

    assert norm("".join(out)) == norm(text)


# --- grouping ---------------------------------------------------------------------------------

S21 = ["Aaaa aaaa aaaa aaaa. ", "Bbbb bbbb bbbb bbbb. ", "Cccc cccc cccc cccc. "]  # 21 bytes each


def test_first_sentence_alone_then_groups_of_at_least_50_bytes():
    g = SegmentGrouper()
    assert g.feed("Hi") == []
    assert g.feed(" there. How") == ["Hi there."]
    # "How are you? " completes; queue = [it]; grouped alone (nothing else queued)
    assert g.feed(" are you? ") == ["How are you?"]
    # three 21-byte sentences in one read: 21 -> 42 (< 50, keep adding) -> 63 (stop)
    assert g.feed("".join(S21) + "Dd") == [
        "Aaaa aaaa aaaa aaaa. Bbbb bbbb bbbb bbbb. Cccc cccc cccc cccc."
    ]
    assert g.finish() == ["Dd"]


def test_at_most_one_segment_per_read_and_the_queue_waits():
    g = SegmentGrouper()
    assert g.feed("First. ") == ["First."]
    five = "".join(S21 + S21[:2])  # five 21-byte sentences
    assert g.feed(five) == ["Aaaa aaaa aaaa aaaa. Bbbb bbbb bbbb bbbb. Cccc cccc cccc cccc."]
    # the two left wait for the next read, even an empty one
    assert g.feed("") == ["Aaaa aaaa aaaa aaaa. Bbbb bbbb bbbb bbbb."]
    assert g.feed("") == []
    assert g.finish() == []


def test_first_read_with_several_sentences_releases_only_the_first():
    g = SegmentGrouper()
    assert g.feed("Hello there. How are you? I am fine. Thanks.") == ["Hello there."]
    # end: queue + unterminated tail grouped: 13 + 11 + 7 = 31 bytes < 50 -> one group
    assert g.finish() == ["How are you? I am fine. Thanks."]


def test_finish_closes_groups_at_50_bytes():
    g = SegmentGrouper()
    # one read: the first sentence goes alone, the five 21-byte ones stay queued
    assert g.feed("Go. " + "".join(S21 + S21[:2])) == ["Go."]
    assert g.finish() == [
        "Aaaa aaaa aaaa aaaa. Bbbb bbbb bbbb bbbb. Cccc cccc cccc cccc.",
        "Aaaa aaaa aaaa aaaa. Bbbb bbbb bbbb bbbb.",
    ]
    assert SegmentGrouper().finish() == []


def test_bytes_not_characters_count_for_chinese():
    g = SegmentGrouper()
    assert g.feed("好。") == ["好。"]
    # each "一二三四五。" is 6 chars but 18 bytes: 18 -> 36 -> 54 closes after the third
    six = "一二三四五。" * 4
    assert g.feed(six) == ["一二三四五。一二三四五。一二三四五。"]
    assert g.finish() == ["一二三四五。"]


def test_unterminated_reply_and_blank_reply():
    assert split_segments(["Hello", " world"]) == ["Hello world"]
    assert split_segments(["  ", "\n"]) == []
    assert split_segments([]) == []


def test_split_segments_whole_response_in_deltas():
    deltas = ["Sure", "! The answer is 3", ".14, as you know. ", "It is pi. ", "Bye"]
    assert split_segments(deltas) == [
        "Sure!",
        "The answer is 3.14, as you know.",
        "It is pi.",
        "Bye",
    ]


def test_speakable_keeps_speak_now_items_in_order():
    async def reply():
        for item in ["Let me ", "check. Just a", " second", SpeakNow("Calling."), "It is ", "21."]:
            yield item

    async def go():
        return [s async for s in speakable(reply())]

    assert asyncio.run(go()) == [
        "Let me check.",
        "Just a second",
        SpeakNow("Calling."),
        "It is 21.",
    ]


# --- the segment cap --------------------------------------------------------------------------


def test_a_long_sentence_is_cut_at_word_boundaries_within_the_cap():
    text = " ".join(f"w{i}" for i in range(40))  # 149 bytes, no terminator
    sp = SentenceSplitter(max_bytes=32)
    out = sp.push(text) + sp.finish()
    assert all(len(s.encode()) <= 32 for s in out)
    assert " ".join(s.strip() for s in out) == text  # cut only between words, nothing lost
    assert out[0] == "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 "


def test_a_word_longer_than_the_cap_is_cut_hard_never_inside_a_character():
    sp = SentenceSplitter(max_bytes=10)
    out = sp.push("ab " + "一" * 8) + sp.finish()  # 3 bytes per character
    assert out == ["ab ", "一一一", "一一一", "一一"]
    assert [s.strip() for s in split_segments("x" * 25, max_bytes=10)] == ["x" * 10] * 2 + ["x" * 5]


def test_groups_never_grow_past_the_cap():
    g = SegmentGrouper(max_bytes=30)
    assert g.feed("Go. ") == ["Go."]
    # 21 + 21 bytes would be 42 > 30: each 21-byte sentence is its own segment
    assert g.feed("".join(S21)) == ["Aaaa aaaa aaaa aaaa."]
    assert g.finish() == ["Bbbb bbbb bbbb bbbb.", "Cccc cccc cccc cccc."]


@pytest.mark.parametrize(
    ("text", "cap", "head"),
    [
        ("hello world foo", 11, "hello world"),  # the cut falls before a space
        ("hello world foo", 13, "hello world "),  # inside a word: back to its start
        ("helloworld", 5, "hello"),  # one word: cut hard
        ("héllo wörld", 9, "héllo "),  # never inside a UTF-8 sequence
        ("short", 10, "short"),
    ],
)
def test_split_at_word(text, cap, head):
    assert split_at_word(text, cap) == (head, text[len(head) :])
    assert len(head.encode()) <= cap


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab é一 .!\n")), max_size=200),
    cap=st.integers(min_value=4, max_value=40),
)
def test_capped_segments_keep_everything_in_order(text, cap):
    out = split_segments(text, max_bytes=cap)
    assert all(0 < len(s.encode()) <= cap for s in out)
    assert "".join("".join(out).split()) == "".join(text.split())
