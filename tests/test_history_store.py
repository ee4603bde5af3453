"""gsc.core.history without sockets: the rules of channelHistory and the bounded HistoryStore."""

import pytest

from gsc.errors import BrokerError, InvalidArgumentsError, InvalidOptionsError
from gsc.core.history import (CHANNEL_OVERHEAD, ENTRY_OVERHEAD, HOLD_LIMIT, HistoryPolicy, HistoryRules,
                         HistoryStore, RecoveryGate, recovery_request)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def store_of(option, max_history_bytes=None):
    clock = Clock()
    return HistoryStore(HistoryRules(option, max_history_bytes), clock=clock), clock


def offsets(result):
    return [p['offset'] for p in result['publications']]


def test_rules_first_matching_pattern_wins_and_defaults_fill_in():
    rules = HistoryRules({'room/vip/*': {'size': 5}, 'room/*': {'ttl': 10, 'publishOffsets': True}})
    assert rules.policy('room/vip/a') == HistoryPolicy(5, 300, 1048576, False)
    assert rules.policy('room/a/b') == HistoryPolicy(100, 10, 1048576, True)  # * crosses /
    assert rules.policy('lobby') is None
    assert not HistoryRules({}) and HistoryRules({'a': {}})
    assert HistoryRules().max_history_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize('option, words', [
    ('room/*', 'must be a dict'),
    ({'room/*': {'size': 0}}, "'room/*'.size must be a number from 1 to 10000"),
    ({'room/*': {'size': 10001}}, 'size'),
    ({'room/*': {'size': 2.5}}, 'whole number'),
    ({'room/*': {'ttl': -1}}, 'ttl'),
    ({'room/*': {'maxBytes': True}}, 'maxBytes'),
    ({'room/*': {'publishOffsets': 1}}, 'publishOffsets'),
    ({'room/*': {'sise': 3}}, 'unknown keys sise'),
    ({'room/*': 7}, 'must map to a dict'),
    ({'': {}}, 'non-empty string'),
])
def test_bad_rules_name_the_option(option, words):
    with pytest.raises(InvalidOptionsError) as info:
        HistoryRules(option)
    assert 'channelHistory' in str(info.value) and words in str(info.value)


def test_bad_max_history_bytes_names_the_option():
    with pytest.raises(InvalidOptionsError, match='maxHistoryBytes'):
        HistoryRules({}, 0)
    assert HistoryRules.from_options({'max_history_bytes': 10, 'channel_history': {'a': {}}}) \
        .max_history_bytes == 10


def test_offsets_grow_by_one_within_an_epoch():
    store, _ = store_of({'room/*': {}})
    positions = [store.append('room/a', i) for i in range(3)]
    epoch = positions[0][1]
    assert positions == [(1, epoch), (2, epoch), (3, epoch)]
    assert store.append('room/b', 'x')[0] == 1 and store.append('room/b', 'y')[1] != epoch
    assert store.append('lobby', 'x') is None


def test_read_last_n_and_since():
    store, _ = store_of({'room/*': {'size': 10}})
    for i in range(1, 6):
        store.append('room/a', {'n': i})
    everything = store.read('room/a')
    assert offsets(everything) == [1, 2, 3, 4, 5] and everything['recovered']
    assert everything['publications'][0] == {'offset': 1, 'data': {'n': 1}}
    assert offsets(store.read('room/a', limit=2)) == [4, 5]
    assert store.read('room/a', limit=0)['publications'] == []
    epoch = everything['epoch']
    since = store.read('room/a', since=3, epoch=epoch)
    assert offsets(since) == [4, 5] and since['recovered'] and since['offset'] == 5
    assert offsets(store.read('room/a', since=1, epoch=epoch, limit=2)) == [2, 3]
    up_to_date = store.read('room/a', since=5, epoch=epoch)
    assert up_to_date['recovered'] and up_to_date['publications'] == []


def test_last_n_with_fewer_kept_than_asked_gives_them_all():
    """A limit above what is kept, not above size: every kept publication (not the last
    2 * kept - limit of them)."""
    store, _ = store_of({'room/*': {'size': 50}})
    for i in range(1, 31):
        store.append('room/a', i)
    assert offsets(store.read('room/a', limit=50)) == list(range(1, 31))
    assert offsets(store.read('room/a', limit=40)) == list(range(1, 31))
    assert offsets(store.read('room/a', limit=30)) == list(range(1, 31))
    assert offsets(store.read('room/a', limit=29)) == list(range(2, 31))


def test_a_gap_or_another_epoch_is_not_recovered():
    store, _ = store_of({'room/*': {'size': 3}})
    for i in range(1, 8):
        store.append('room/a', i)
    epoch = store.read('room/a')['epoch']
    assert offsets(store.read('room/a')) == [5, 6, 7]
    assert offsets(store.read('room/a', since=4, epoch=epoch)) == [5, 6, 7]
    lost = store.read('room/a', since=3, epoch=epoch)
    assert not lost['recovered'] and lost['publications'] == [] and lost['offset'] == 7
    other = store.read('room/a', since=6, epoch='elsewhere')
    assert not other['recovered'] and other['publications'] == [] and other['epoch'] == epoch
    assert not store.read('room/a', since=8, epoch=epoch)['recovered']


def test_limit_is_capped_by_size():
    store, _ = store_of({'room/*': {'size': 2}})
    for i in range(5):
        store.append('room/a', i)
    assert offsets(store.read('room/a', limit=1000)) == [4, 5]


def test_max_bytes_per_channel():
    store, _ = store_of({'room/*': {'maxBytes': 25}})
    for i in range(1, 6):
        store.append('room/a', 'x' * 8)  # 10 bytes of JSON each
    assert offsets(store.read('room/a')) == [4, 5]
    store.append('room/a', 'y' * 40)  # larger than maxBytes alone: kept nowhere
    result = store.read('room/a')
    assert result['publications'] == [] and result['offset'] == 6


def test_ttl_expires_publications_then_the_epoch():
    store, clock = store_of({'room/*': {'ttl': 10}})
    first = store.append('room/a', 1)
    clock.now += 6
    store.append('room/a', 2)
    clock.now += 5
    result = store.read('room/a')
    assert offsets(result) == [2] and result['epoch'] == first[1]
    assert not store.read('room/a', since=0, epoch=first[1])['recovered']
    assert store.read('room/a', since=1, epoch=first[1])['recovered']
    clock.now += 10
    store.purge_expired()
    assert len(store) == 0 and store.bytes == 0
    again = store.append('room/a', 3)
    assert again[0] == 1 and again[1] != first[1]


def test_ttl_applies_on_read_without_a_purge():
    store, clock = store_of({'room/*': {'ttl': 1}})
    epoch = store.append('room/a', 1)[1]
    clock.now += 2
    result = store.read('room/a', since=1, epoch=epoch)
    assert not result['recovered'] and result['epoch'] != epoch and result['offset'] == 0


def test_max_history_bytes_evicts_the_least_recently_published_channel():
    entry = len('"0123456789"') + ENTRY_OVERHEAD
    store, _ = store_of({'*': {}}, max_history_bytes=3 * (CHANNEL_OVERHEAD + 2 * entry))
    epochs = {name: store.append(name, '0123456789')[1] for name in ('a', 'b', 'c')}
    for name in ('b', 'a', 'c'):
        store.append(name, '0123456789')
    store.append('d', '0123456789')
    assert store.bytes <= store.rules.max_history_bytes
    assert store.read('a', since=0, epoch=epochs['a'])['recovered']
    dropped = store.read('b', since=2, epoch=epochs['b'])
    assert not dropped['recovered'] and dropped['offset'] == 0


def test_unpublished_reads_evict_one_another_first():
    store, _ = store_of({'*': {}}, max_history_bytes=4 * CHANNEL_OVERHEAD + 200)
    epoch = store.append('kept', 'x')[1]
    for i in range(100):
        store.read('empty/%d' % i)
    assert store.bytes <= store.rules.max_history_bytes and len(store) <= 4
    assert offsets(store.read('kept', since=0, epoch=epoch)) == [1]


def test_one_channel_larger_than_everything_keeps_its_newest():
    store, _ = store_of({'*': {'size': 1000}}, max_history_bytes=CHANNEL_OVERHEAD + 3 * (3 + ENTRY_OVERHEAD))
    for i in range(10):
        store.append('a', str(i))
    assert offsets(store.read('a')) == [8, 9, 10]


def test_bad_reads():
    store, _ = store_of({'room/*': {}})
    with pytest.raises(BrokerError, match='lobby has no history'):
        store.read('lobby')
    with pytest.raises(InvalidArgumentsError, match='since'):
        store.read('room/a', since=-1, epoch='e')
    with pytest.raises(InvalidArgumentsError, match='epoch'):
        store.read('room/a', since=1)
    with pytest.raises(InvalidArgumentsError, match='limit'):
        store.read('room/a', limit='5')
    with pytest.raises(ValueError):
        store.append('room/a', object())


def test_recovery_requests():
    policy = HistoryRules({'a': {'size': 5}}).policy('a')
    assert recovery_request({'recover': {'offset': 3, 'epoch': 'e'}}, policy) == (3, 'e', None)
    assert recovery_request({'history': 5}, policy) == (None, None, 5)
    assert recovery_request({'recover': {'offset': 3, 'epoch': 'e'}}, None) is None
    assert recovery_request({'other': 1}, policy) is None and recovery_request('x', policy) is None
    for bad in ({'recover': {'offset': 1.5, 'epoch': 'e'}}, {'recover': {'offset': 1}},
                {'history': -1}, {'history': 6}):
        with pytest.raises(InvalidArgumentsError):
            recovery_request(bad, policy)


def test_recovery_gate_holds_then_passes_each_offset_once():
    gate = RecoveryGate()
    assert not gate.passes('f4', 4, 'e') and not gate.passes('f5', 5, 'e')
    assert gate.release('e', 4) == ['f4', 'f5']
    assert not gate.passes('f4', 4, 'e') and gate.passes('f5', 5, 'e') and not gate.passes('f5', 5, 'e')
    assert gate.passes('g1', 1, 'new epoch') and gate.offset == 1


def test_recovery_gate_overflows_instead_of_holding_without_bound():
    gate = RecoveryGate()
    for offset in range(HOLD_LIMIT + 5):
        gate.passes(offset, offset, 'e')
    assert gate.overflowed and len(gate.release('e', 0)) == HOLD_LIMIT
