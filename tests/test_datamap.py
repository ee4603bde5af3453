"""The broker key/value store: sc-broker's main.js cases (B-ids), its rules and expiry."""

import pytest

from gsc.core.datamap import DataMap
from gsc.errors import InvalidArgumentsError
from gsc.core.protocol import UNDEFINED

V = 'This is a value'


@pytest.fixture
def dm():
    return DataMap()


# --- sc-broker main.js ---------------------------------------------------------------

def test_b146_set_get(dm):
    """B-146: set(['d','e','f'], v) then get(['d','e','f']) is v."""
    dm.set(['d', 'e', 'f'], V)
    assert dm.get(['d', 'e', 'f']) == V


def test_b147_add_to_scalar(dm):
    """B-147: add to a path holding a string gives index 1 and [v, item]."""
    dm.set(['d', 'e', 'f'], V)
    assert dm.add(['d', 'e', 'f'], 'append this') == 1
    assert dm.get(['d', 'e', 'f']) == [V, 'append this']


def test_b148_concat_string(dm):
    """B-148: concat a string onto a string gives [v1, item]."""
    dm.set(['g', 'h', 'i'], V)
    dm.concat(['g', 'h', 'i'], 'append this')
    assert dm.get(['g', 'h', 'i']) == [V, 'append this']


def test_b149_concat_array(dm):
    """B-149: concat an array onto a string spreads its items."""
    dm.set(['j', 'k', 'l'], V)
    dm.concat(['j', 'k', 'l'], [1, 2, 3, 4])
    assert dm.get(['j', 'k', 'l']) == [V, 1, 2, 3, 4]


def test_b150_concat_object(dm):
    """B-150: concat an object onto a string makes it one element."""
    dm.set(['m', 'n', 'o'], V)
    dm.concat(['m', 'n', 'o'], {'one': 1, 'two': 2, 'three': 3})
    value = dm.get(['m', 'n', 'o'])
    assert value[0] == V
    assert (value[1]['one'], value[1]['two'], value[1]['three']) == (1, 2, 3)


def test_b151_remove_range_object(dm):
    """B-151: removeRange(path, 'two', 'three') on an object removes just 'two'."""
    dm.set(['m', 'n', 'o'], {'one': 1, 'two': 2, 'three': 3, 'four': 4, 'five': 5})
    assert dm.remove_range(['m', 'n', 'o'], 'two', 'three') == {'two': 2}
    assert dm.get(['m', 'n', 'o']) == {'one': 1, 'three': 3, 'four': 4, 'five': 5}
    assert list(dm.get(['m', 'n', 'o'])) == ['one', 'three', 'four', 'five']


def test_b152_remove_range_array(dm):
    """B-152: removeRange(path, 3, 6) on [0..8] leaves [0,1,2,6,7,8]."""
    dm.set(['p', 'q'], list(range(9)))
    assert dm.remove_range(['p', 'q'], 3, 6) == [3, 4, 5]
    assert dm.get(['p', 'q']) == [0, 1, 2, 6, 7, 8]


def test_b153_nested_read_without_exec(dm):
    """B-153 (data part; exec itself is not offered): a shorter path reads the subtree."""
    dm.set(['one', 'two', 'three', 'four'], V)
    assert dm.get(['one', 'two', 'three']) == {'four': V}


def test_b154_object_value_without_exec(dm):
    """B-154 (data part; exec itself is not offered): an object set at 'point' reads back."""
    dm.set('point', {'x': 1, 'y': 2})
    assert dm.get(['point']) == {'x': 1, 'y': 2}


@pytest.fixture
def ranges(dm):
    dm.set(['this', 'is', 'an', 'array'], list(range(8)))
    dm.set(['this', 'is', 'an', 'object'], {'red': 1, 'green': 2, 'blue': 3, 'yellow': 4, 'orange': 5})
    return dm


ARRAY = ['this', 'is', 'an', 'array']
OBJECT = ['this', 'is', 'an', 'object']


def test_b155_get_range_1(ranges):
    """B-155: getRange(array, 2, 5) is [2,3,4]."""
    assert ranges.get_range(ARRAY, 2, 5) == [2, 3, 4]


def test_b156_get_range_2(ranges):
    """B-156: getRange(array, 4) is [4..7]."""
    assert ranges.get_range(ARRAY, 4) == [4, 5, 6, 7]


def test_b157_get_range_3(ranges):
    """B-157: getRange(array, 0, 5) is [0..4]."""
    assert ranges.get_range(ARRAY, 0, 5) == [0, 1, 2, 3, 4]


def test_b158_get_range_4(ranges):
    """B-158: getRange(array, 4, 15) clamps to the length."""
    assert ranges.get_range(ARRAY, 4, 15) == [4, 5, 6, 7]


def test_b159_get_range_5(ranges):
    """B-159: getRange(object, 'green', 'blue') is {green: 2}."""
    assert ranges.get_range(OBJECT, 'green', 'blue') == {'green': 2}


def test_b160_get_range_6(ranges):
    """B-160: getRange(object, 'blue') runs to the end."""
    assert ranges.get_range(OBJECT, 'blue') == {'blue': 3, 'yellow': 4, 'orange': 5}


def test_b161_get_range_7(ranges):
    """B-161: getRange(object, 'green', 'yellow') is {green, blue}."""
    assert ranges.get_range(OBJECT, 'green', 'yellow') == {'green': 2, 'blue': 3}


SPLICED = ['levelA1', 'levelA2']


def test_b162_splice_replace(dm):
    """B-162: splice index 2, count 2, items [c2, d2]."""
    dm.set(SPLICED, ['a', 'b', 'c', 'd', 'e'])
    assert dm.splice(SPLICED, index=2, count=2, items=['c2', 'd2']) == ['c', 'd']
    assert dm.get(SPLICED) == ['a', 'b', 'c2', 'd2', 'e']


def test_b163_splice_only_index(dm):
    """B-163: splice with only index deletes to the end."""
    dm.set(SPLICED, ['a', 'b', 'c', 'd', 'e'])
    assert dm.splice(SPLICED, index=2) == ['c', 'd', 'e']
    assert dm.get(SPLICED) == ['a', 'b']


def test_b164_splice_only_count(dm):
    """B-164: splice with only count starts at 0."""
    dm.set(SPLICED, ['a', 'b', 'c', 'd', 'e'])
    assert dm.splice(SPLICED, count=3) == ['a', 'b', 'c']
    assert dm.get(SPLICED) == ['d', 'e']


def test_b165_splice_only_items(dm):
    """B-165: splice with only items inserts at 0."""
    dm.set(SPLICED, ['c', 'd', 'e'])
    assert dm.splice(SPLICED, items=['a', 'b']) == []
    assert dm.get(SPLICED) == ['a', 'b', 'c', 'd', 'e']


def test_b166_splice_nested_items(dm):
    """B-166: spliced-in objects are stored as maps that deeper paths address."""
    dm.set(SPLICED, ['a', 'b'])
    item = {'key1': 1, 'key2': {'nestedKey1': 'hi'}}
    dm.splice(SPLICED, index=2, count=0, items=[item, 'c'])
    assert dm.get(SPLICED) == ['a', 'b', {'key1': 1, 'key2': {'nestedKey1': 'hi'}}, 'c']
    assert dm.get(SPLICED + [2, 'key2']) == {'nestedKey1': 'hi'}


def test_b177_expire_leaves_parents(dm):
    """B-177: an expired leaf is removed; its parents remain ({"expire": {}})."""
    dm.set(['check', 'expire', 'key'], 'some data')
    dm.expire([['check', 'expire', 'key']], 1, now=1000.2)
    assert dm.purge_expired(now=1000.4) == []
    assert dm.purge_expired(now=1002.3) == [['check', 'expire', 'key']]
    assert dm.get(['check']) == {'expire': {}}
    assert dm.get_expiry(['check', 'expire', 'key']) is None


def test_b179_set_returns_value(dm):
    """B-179: set returns the value."""
    assert dm.set(['a', 'b', 'c'], V) == V


def test_b180_set_returns_object(dm):
    """B-180: set of an object returns that object."""
    assert dm.set(['jlkfjsl'], {'hello': 'world'}) == {'hello': 'world'}
    assert dm.get('jlkfjsl') == {'hello': 'world'}


def test_b181_set_stores_without_get_value(dm):
    """B-181: the getValue flag is the broker's business; the store always stores."""
    dm.set(['d', 'e', 'f'], V)
    assert dm.get(['d', 'e', 'f']) == V


def test_b182_set_overwrites(dm):
    """B-182: setting the same path again replaces the array."""
    path = ['that', '8a788b9c-c50e-0b3f-bd47-ec0c63327bf1']
    dm.set(path, [1, 2, 3, 4, 5])
    dm.set(path, [6, 7, 8])
    assert dm.get('that') == {'8a788b9c-c50e-0b3f-bd47-ec0c63327bf1': [6, 7, 8]}


def test_b183_set_after_get(dm):
    """B-183: a set issued after a get of the same missing path succeeds."""
    assert dm.get(['g', 'h', 'i']) is UNDEFINED
    assert dm.set(['g', 'h', 'i'], V) == V
    assert dm.get(['g', 'h', 'i']) == V


def test_b184_remove(dm):
    """B-184: remove returns the whole array; the path is then missing."""
    dm.set(['a', 'b', 'c'], [1, 2, 3])
    assert dm.remove(['a', 'b', 'c']) == [1, 2, 3]
    assert dm.get(['a', 'b', 'c']) is UNDEFINED


def test_b185_pop(dm):
    """B-185: pop returns [last] and leaves the rest."""
    dm.set(['a', 'b', 'c'], [1, 2, 3])
    assert dm.pop(['a', 'b', 'c']) == [3]
    assert dm.get(['a', 'b', 'c']) == [1, 2]


# --- rules -------------------------------------------------------------------------

def test_count(dm):
    """count: entries of a map, 1 for any scalar (None and 0 too), 0 if missing."""
    dm.set('list', [1, 2, 3])
    dm.set('obj', {'a': 1, 'b': 2})
    dm.set('s', 'x')
    dm.set('zero', 0)
    dm.set('null', None)
    assert [dm.count(k) for k in ('list', 'obj', 's', 'zero', 'null', 'missing')] == [3, 2, 1, 1, 1, 0]
    assert dm.count(['s', 'deeper']) == 0


def test_has_key_with_stored_none(dm):
    """hasKey: a stored None is a value; a missing key (or a path through a scalar) is not."""
    dm.set('n', None)
    assert dm.get('n') is None
    assert dm.has_key('n')
    assert not dm.has_key('missing')
    assert dm.get('missing') is UNDEFINED
    assert not dm.has_key(['n', 'x'])
    assert dm.get(['n', 'x']) is UNDEFINED


def test_numeric_keys_address_array_elements(dm):
    """Numbers and numeric strings address array elements; '-1' and '01' are names."""
    dm.set('arr', ['a', 'b', 'c'])
    assert dm.get(['arr', 1]) == 'b'
    assert dm.get(['arr', '1']) == 'b'
    assert dm.get(['arr', 1.0]) == 'b'
    dm.set(['arr', '2'], 'C')
    assert dm.get('arr') == ['a', 'b', 'C']
    dm.set(['arr', '01'], 'x')
    assert dm.get('arr') == {'0': 'a', '1': 'b', '2': 'C', '01': 'x'}
    dm.set(['o', -1], 'neg')
    assert dm.get('o') == {'-1': 'neg'}


def test_implicit_maps_read_back_as_objects(dm):
    """Maps created by a deeper set are objects even with keys 0..n-1."""
    dm.set(['m', 0], 'a')
    dm.set(['m', 1], 'b')
    assert dm.get('m') == {'0': 'a', '1': 'b'}
    dm.set('l', [])
    assert dm.get('l') == []
    dm.set('e', {})
    assert dm.get('e') == {}


def test_object_key_order_is_javascript_order(dm):
    """Integer-like keys come first in ascending order, then names in insertion order."""
    dm.set('o', {'b': 1, '10': 2, 'a': 3, '2': 4})
    assert list(dm.get('o')) == ['2', '10', 'b', 'a']
    assert dm.get_range('o', '10', 'a') == {'10': 2, 'b': 1}
    assert dm.get_range('o', 10) == {'10': 2, 'b': 1, 'a': 3}


def test_set_replaces_scalars_on_the_way(dm):
    """set creates intermediate maps, replacing non-map values."""
    dm.set('a', 'scalar')
    dm.set(['a', 'b', 'c'], 1)
    assert dm.get_all() == {'a': {'b': {'c': 1}}}


def test_get_returns_plain_copies(dm):
    """Mutating a value read (or the value given to set) does not change the store."""
    value = {'x': [1, 2]}
    dm.set('k', value)
    value['x'].append(3)
    copy = dm.get('k')
    copy['x'].append(4)
    dm.get_all()['k']['y'] = 1
    assert dm.get('k') == {'x': [1, 2]}


def test_get_range_of_missing_and_scalar(dm):
    """getRange of a missing or scalar value is {}; a negative from counts as 0."""
    dm.set('s', 'abc')
    dm.set('arr', [1, 2, 3])
    assert dm.get_range('missing', 0) == {}
    assert dm.get_range('s', 0) == {}
    assert dm.get_range('arr', -5, 2) == [1, 2]
    assert dm.get_range('arr', '1') == [2, 3]


def test_get_range_from_equal_to_is_empty(dm):
    """An object range whose from key equals its to key is empty; an unknown from too."""
    dm.set('o', {'a': 1, 'b': 2})
    assert dm.get_range('o', 'a', 'a') == {}
    assert dm.get_range('o', 'zz') == {}


def test_remove_range_to_end_and_missing(dm):
    """removeRange without to removes to the end; a missing value gives {} and stays missing."""
    dm.set('arr', [0, 1, 2, 3])
    assert dm.remove_range('arr', 1) == [1, 2, 3]
    assert dm.get('arr') == [0]
    dm.set('o', {'a': 1, 'b': 2, 'c': 3})
    assert dm.remove_range('o', 'b') == {'b': 2, 'c': 3}
    assert dm.get('o') == {'a': 1}
    assert dm.remove_range('missing', 0) == {}
    assert not dm.has_key('missing')


def test_add(dm):
    """add: missing -> [value] at 0; a map -> at its length; a dict item is a nested map."""
    assert dm.add('x', 'first') == 0
    assert dm.add('x', {'k': 'v'}) == 1
    assert dm.get('x') == ['first', {'k': 'v'}]
    assert dm.get(['x', 1, 'k']) == 'v'
    dm.set('n', None)
    assert dm.add('n', 5) == 0
    assert dm.get('n') == [5]
    dm.set('names', {'a': 1})
    assert dm.add('names', 'z') == 0
    assert dm.get('names') == {'0': 'z', 'a': 1}


def test_concat_on_missing(dm):
    """concat on a missing key stores the value (a scalar wrapped in a list)."""
    assert dm.concat('a', [1, 2]) == [1, 2]
    assert dm.get('a') == [1, 2]
    dm.concat('b', 'x')
    assert dm.get('b') == ['x']
    dm.concat('c', {'k': 1})
    assert dm.get('c') == {'k': 1}


def test_concat_on_map(dm):
    """concat on a map: array items appended at the end, object entries assigned by key."""
    dm.set('a', [1, 2])
    dm.concat('a', [3, {'four': 4}])
    assert dm.get('a') == [1, 2, 3, {'four': 4}]
    assert dm.get(['a', 3, 'four']) == 4
    dm.set('o', {'x': 1})
    dm.concat('o', {'y': 2, 'x': 3})
    assert dm.get('o') == {'x': 3, 'y': 2}
    dm.concat('o', 'z')
    assert dm.get('o') == {'0': 'z', 'x': 3, 'y': 2}


def test_concat_on_falsy_scalar(dm):
    """A stored 0 is a scalar, not missing: concat gives [0, ...items]."""
    dm.set('z', 0)
    dm.concat('z', [1])
    assert dm.get('z') == [0, 1]


def test_remove_element_leaves_hole(dm):
    """remove of an array element deletes it like JS delete: the array reads back as an object."""
    dm.set('arr', [1, 2, 3])
    assert dm.remove(['arr', 1]) == 2
    assert dm.get('arr') == {'0': 1, '2': 3}
    assert dm.remove(['arr', 1]) is UNDEFINED
    assert dm.remove(['missing', 'deep']) is UNDEFINED
    assert dm.add('arr', 4) == 3


def test_splice_variants(dm):
    """splice: negative index, nothing given, index + items without count, missing target."""
    dm.set('a', [1, 2, 3, 4])
    assert dm.splice('a', -2) == [3, 4]
    assert dm.splice('a') == []
    assert dm.splice('a', 1, items=['x']) == []
    assert dm.get('a') == [1, 'x', 2]
    assert dm.splice('a', 0, 99) == [1, 'x', 2]
    assert dm.get('a') == []
    assert dm.splice('missing', 0, 1) == []
    dm.set('s', 'scalar')
    assert dm.splice('s', 0, 1) == []
    assert dm.get('s') == 'scalar'


def test_splice_closes_holes_and_keeps_names(dm):
    """splice shifts indices (holes included) and keeps named entries."""
    dm.set('a', [1, 2, 3, 4])
    dm.remove(['a', 1])
    dm.set(['a', 'name'], 'n')
    assert dm.splice('a', 0, 2) == [1]
    assert dm.get('a') == {'0': 3, '1': 4, 'name': 'n'}
    dm.remove(['a', 'name'])
    assert dm.get('a') == [3, 4]


def test_pop(dm):
    """pop of an empty array or a missing key gives []."""
    dm.set('e', [])
    assert dm.pop('e') == []
    assert dm.pop('missing') == []


def test_remove_all_and_get_all(dm):
    """getAll is the whole store; removeAll clears it (expiries too)."""
    assert dm.get_all() == {}
    dm.set('a', 1)
    dm.set(['b', 'c'], [2])
    dm.expire(['a'], 10, now=0)
    assert dm.get_all() == {'a': 1, 'b': {'c': [2]}}
    dm.remove_all()
    assert dm.get_all() == {}
    assert dm.get_expiry('a') is None
    assert dm.purge_expired(now=100) == []


def test_extract_keys_and_values(dm):
    """extractKeys/extractValues: Object.keys/values of the value; [] for scalars or missing."""
    dm.set('o', {'a': 1, 'b': {'c': 2}})
    dm.set('l', ['x', 'y'])
    dm.set('s', 'text')
    assert dm.extract_keys('o') == ['a', 'b']
    assert dm.extract_values('o') == [1, {'c': 2}]
    assert dm.extract_keys('l') == ['0', '1']
    assert dm.extract_values('l') == ['x', 'y']
    assert dm.extract_keys('s') == dm.extract_values('missing') == []


def test_set_undefined_removes(dm):
    """Setting UNDEFINED hides the entry, as storing undefined does in JS."""
    dm.set('a', 1)
    assert dm.set('a', UNDEFINED) is UNDEFINED
    assert not dm.has_key('a')


# --- expiry ------------------------------------------------------------------------

def test_expiry_time_is_rounded_now_plus_seconds(dm):
    """expire: round(now) + seconds (halves round up); getExpiry reads it."""
    dm.expire([['a', 'b'], 'c'], 5, now=100.5)
    assert dm.get_expiry(['a', 'b']) == 106
    assert dm.get_expiry(['c']) == 106
    assert dm.get_expiry('zz') is None


def test_unexpire_and_re_expire(dm):
    """unexpire cancels; expire again moves the time."""
    dm.set('a', 1)
    dm.set('b', 2)
    dm.expire(['a', 'b'], 5, now=0)
    dm.unexpire(['a'])
    dm.expire(['b'], 50, now=0)
    assert dm.get_expiry('a') is None
    assert dm.purge_expired(now=10) == []
    assert dm.get_all() == {'a': 1, 'b': 2}
    assert dm.purge_expired(now=50) == [['b']]
    assert dm.get_all() == {'a': 1}


def test_expired_key_of_an_array_element(dm):
    """Expiry addresses any key chain; numeric strings and ints are the same key; the
    purged element leaves a hole (JS delete), so the array reads back as an object."""
    dm.set('l', ['x', 'y'])
    dm.expire([['l', '1']], 1, now=0)
    assert dm.get_expiry(['l', 1]) == 1
    dm.purge_expired(now=1)
    assert dm.get('l') == {'0': 'x'}


def test_purge_uses_current_time_by_default(dm):
    """Without now, expiry and purge use the clock."""
    dm.set('a', 1)
    dm.expire(['a'], -10)
    assert dm.purge_expired() == [['a']]
    assert not dm.has_key('a')


# --- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize('key', [None, True, 1.5, {'a': 1}, [], ['a', None], ['a', ['b']]])
def test_bad_keys(dm, key):
    """A key that is not a str/int (or a non-empty chain of them) is an InvalidArgumentsError."""
    for call in (dm.get, dm.has_key, dm.count, dm.remove, dm.pop):
        with pytest.raises(InvalidArgumentsError):
            call(key)
    with pytest.raises(InvalidArgumentsError):
        dm.set(key, 1)


def test_bad_indices_and_arguments(dm):
    """Non-integer array indices, items that are not a list and bad expiry input are rejected."""
    dm.set('arr', [1, 2])
    with pytest.raises(InvalidArgumentsError):
        dm.get_range('arr', 'x')
    with pytest.raises(InvalidArgumentsError):
        dm.splice('arr', 'x')
    with pytest.raises(InvalidArgumentsError):
        dm.splice('arr', 0, 1, items='ab')
    with pytest.raises(InvalidArgumentsError):
        dm.set({'bad': 1}, 1)
    with pytest.raises(InvalidArgumentsError):
        dm.set('o', {(1, 2): 'tuple key'})
    with pytest.raises(InvalidArgumentsError):
        dm.expire('a', 1)
    with pytest.raises(InvalidArgumentsError):
        dm.expire(['a'], '1')
    with pytest.raises(InvalidArgumentsError):
        dm.unexpire(None)
