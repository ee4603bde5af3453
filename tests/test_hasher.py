"""sc-hasher compatibility: every vector of master-api.md §8."""

import pytest

from gsc.errors import InvalidArgumentsError
from gsc.hasher import hash_key, string_hash

RAW_HASHES = [
    ('foo', 101574),
    ('bar', 97299),
    ('a', 97),
    ('my-channel-1', -289073402),
    ('socketcluster', -284607705),
    ('x-channel-99', 1415733407),
    ('\U0001F600', 1772899),
    ('a very long channel name that overflows 32 bits', -1954642530),
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
    """The signed 32-bit String.hashCode of the §8 table."""
    assert string_hash(text) == expected


@pytest.mark.parametrize('key, modulo, expected', VECTORS)
def test_hash_vectors(key, modulo, expected):
    """Every key/modulo/result row of the §8 table."""
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
