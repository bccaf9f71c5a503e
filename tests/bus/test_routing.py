"""AMQP topic matching: the trie the local transport routes with agrees with the reference
pattern matcher (and so with RabbitMQ's rules) on generated bindings and keys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bus.routing import TopicTrie, encode_key_word, topic_matcher

WORDS = st.sampled_from(["a", "b", "call", "x%2Ey", ""])
PATTERN_WORDS = st.sampled_from(["a", "b", "call", "*", "#", ""])


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(st.lists(PATTERN_WORDS, min_size=1, max_size=4).map(".".join), max_size=8),
    key=st.lists(WORDS, min_size=1, max_size=5).map(".".join),
)
def test_trie_agrees_with_the_pattern_matcher(patterns: list[str], key: str) -> None:
    trie = TopicTrie()
    for index, pattern in enumerate(patterns):
        trie.add(pattern, index)
    expected = {i for i, pattern in enumerate(patterns) if topic_matcher(pattern)(key)}
    assert set(trie.match(key)) == expected


def test_rabbitmq_examples() -> None:
    cases = {
        "call.*.abc": (["call.CHANNEL_CREATE.abc"], ["call.CHANNEL_CREATE.abd", "call.abc"]),
        "call.CHANNEL_DESTROY.*": (["call.CHANNEL_DESTROY.x"], ["call.CHANNEL_DESTROY.x.y"]),
        "registration.#": (["registration", "registration.success.r.u"], ["registrar.x"]),
        "#.u": (["u", "a.b.u"], ["u.a"]),
        "#": (["", "a", "a.b.c"], []),
        "a.#.b": (["a.b", "a.x.b", "a.x.y.b"], ["a.x", "b"]),
    }
    for pattern, (matching, other) in cases.items():
        trie = TopicTrie()
        trie.add(pattern, "q")
        for key in matching:
            assert trie.match(key) == ["q"], (pattern, key)
            assert topic_matcher(pattern)(key), (pattern, key)
        for key in other:
            assert trie.match(key) == [], (pattern, key)
            assert not topic_matcher(pattern)(key), (pattern, key)


def test_remove_prunes_and_keeps_others() -> None:
    trie = TopicTrie()
    trie.add("call.*.a", "q1")
    trie.add("call.*.b", "q2")
    trie.add("call.*.a", "q3")
    trie.remove("call.*.a", "q1")
    assert trie.match("call.X.a") == ["q3"]
    trie.remove("call.*.a", "q3")
    trie.remove("call.*.a", "missing")
    assert trie.match("call.X.a") == []
    assert trie.match("call.X.b") == ["q2"]
    assert len(trie) == 1


def test_routing_key_words_are_escaped() -> None:
    assert encode_key_word("a.b*c#d%e") == "a%2Eb%2Ac%23d%25e"
