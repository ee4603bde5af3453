"""sc-hasher compatibility: every vector of sc-hasher's table, and the fast hash of long keys
against the plain UTF-16 loop."""

import random

import pytest

from gsc.errors import InvalidArgumentsError
from gsc.core.hasher import hash_key, string_hash

RAW_HASHES = [
    ('foo', 101574),
    ('bar', 97299),
    ('a', 97),
    ('my-channel-1', -289073402),
    ('socketcluster', -284607705),
    ('x-channel-99', 1415733407),
    ('\U0001F600', 1772899),
    ('a very long channel name that overflows 32 bits', -1954642530),
    ('\ud800', 55296),
    ('a\udc00b', 1839235),
    ('\U0001F600\U00010000x', 1331712053),
    ('\u00e9' * 16, -656209664),
    ('channel-' + '\U0001F600' * 20 + '\udfff', 2142278137),
    ('x' * 1000, -1715418112),
    ('\u00e9' + 'x' * 99999, 139899247),
]

VECTORS = [
    ('foo', 2, 0),
    ('foo', 3, 0),
    ('bar', 3, 0),
    ('a', 2, 1),
    ('my-channel-1', 4, 2),
    ('my-channel-1', 3, 2),
    ('socketcluster', 7, 4),
    ('x-channel-99', 4, 3),
    ('\U0001F600', 5, 4),
    ('a very long channel name that overflows 32 bits', 10, 0),
    ('', 1, 0),
    ('', 7, 0),
    (5, 3, 2),
    (-7, 3, 1),
    (['foo', 'x'], 3, 0),
    ({'a': 1}, 3, 1),
]


@pytest.mark.parametrize('text, expected', RAW_HASHES)
def test_raw_int32_hash(text, expected):
    """The signed 32-bit String.hashCode of the table."""
    assert string_hash(text) == expected


@pytest.mark.parametrize('key, modulo, expected', VECTORS)
def test_hash_vectors(key, modulo, expected):
    """Every key/modulo/result row of the table."""
    assert hash_key(key, modulo) == expected


def test_two_brokers_observed_placement():
    """Observed with 2 brokers: foo and wch on broker 0, a on broker 1."""
    assert [hash_key(name, 2) for name in ('foo', 'wch', 'a')] == [0, 0, 1]


def test_object_uses_its_json_text():
    """A non-string key hashes as its compact JSON text."""
    assert hash_key({'a': 1}, 1000) == abs(string_hash('{"a":1}')) % 1000
    assert hash_key(True, 1000) == abs(string_hash('true')) % 1000
    assert hash_key([{'a': 1}], 1000) == hash_key({'a': 1}, 1000)


@pytest.mark.parametrize('key', [None, '', [], [None], float('nan'), float('inf'), {1, 2}])
def test_empty_null_and_unserialisable_give_zero(key):
    """None, '', an empty array and values without a JSON text map to index 0."""
    assert hash_key(key, 5) == 0


def test_int32_minimum_is_made_positive():
    """abs is taken on the mathematical value, so -2**31 stays in range."""
    assert hash_key(-2 ** 31, 3) == 2 ** 31 % 3
    assert hash_key(7.9, 4) == 3


@pytest.mark.parametrize('modulo', [0, -1, 1.5, True, None])
def test_bad_modulo(modulo):
    """A modulo that is not a positive int is an InvalidArgumentsError."""
    with pytest.raises(InvalidArgumentsError):
        hash_key('foo', modulo)


def reference_hash(text):
    """Java's String.hashCode, one UTF-16 unit at a time (the definition)."""
    h = 0
    for unit in memoryview(text.encode('utf-16-le', 'surrogatepass')).cast('H'):
        h = (h * 31 + unit) & 0xFFFFFFFF
    return h - 0x100000000 if h & 0x80000000 else h


def random_text(rng, length):
    """Characters from the whole range: ASCII, BMP, non-BMP, lone surrogates, U+FFFF."""
    pools = [lambda: chr(rng.randrange(0x80)), lambda: chr(rng.randrange(0x10FFFF + 1)),
             lambda: chr(rng.randrange(0x10000, 0x10FFFF + 1)),
             lambda: chr(rng.randrange(0xD800, 0xE000)), lambda: '\uffff']
    return ''.join(rng.choice(pools)() for _ in range(length))


def test_every_length_matches_the_unit_loop():
    """Keys of 1..600 characters and around the slot boundaries hash as the plain loop does."""
    rng = random.Random(8)
    lengths = list(range(1, 601)) + [1023, 1024, 1025, 4095, 4096, 4097, 65536, 140001]
    for length in lengths:
        text = random_text(rng, length)
        assert string_hash(text) == reference_hash(text), length


def test_extreme_units_do_not_carry_between_slots():
    """All units 0xFFFF (the largest products) and all zero units, at many lengths."""
    for length in (15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 4097):
        for text in ('\uffff' * length, '\x00' * length, '\uffff\x00' * length):
            assert string_hash(text) == reference_hash(text), (length, text[:2])


def test_one_broker_skips_the_hash():
    """With modulo 1 every key is 0 (and a huge key costs nothing)."""
    assert hash_key('x' * 10 ** 6, 1) == 0 and hash_key({'a': 1}, 1) == 0
