"""The sans-I/O presence core (gsc/core/presence.py) and the reserved channel names (gsc/core/reserved.py)."""

import pytest

from gsc.errors import BrokerError, InvalidOptionsError
from gsc.core.presence import (PresencePolicy, PresenceRules, PresenceTable, events_channel,
                          member_user, presence_event)
from gsc.core.reserved import reserved_channel_error


def test_rules_first_matching_pattern_wins_with_defaults():
    rules = PresenceRules({'room/vip/*': {'maxMembers': 2, 'joinLeave': False},
                           'room/*': {'userField': 'name'}})
    assert rules.policy('room/vip/a') == PresencePolicy(2, False, 'username')
    assert rules.policy('room/a/b') == PresencePolicy(1000, True, 'name')
    assert rules.policy('other') is None
    assert not PresenceRules() and rules


def test_reserved_channels_never_have_presence():
    rules = PresenceRules({'*': {}})
    assert rules.policy('#gsc/presence/x') is None
    assert rules.policy('x') is not None


@pytest.mark.parametrize('option, words', [
    ([], 'must be a dict'),
    ({'': {}}, 'non-empty string'),
    ({'a': 5}, 'must map to a dict'),
    ({'a': {'size': 1}}, 'unknown keys size'),
    ({'a': {'maxMembers': 0}}, 'maxMembers'),
    ({'a': {'maxMembers': True}}, 'maxMembers'),
    ({'a': {'joinLeave': 1}}, 'joinLeave'),
    ({'a': {'userField': 3}}, 'userField'),
])
def test_bad_options_are_named(option, words):
    with pytest.raises(InvalidOptionsError) as info:
        PresenceRules(option)
    assert 'channelPresence' in str(info.value) and words in str(info.value)


def test_from_options_reads_either_spelling():
    assert PresenceRules.from_options({'channel_presence': {'a': {}}}).policy('a')
    assert PresenceRules.from_options({'channelPresence': {'a': {}}}).policy('a')
    assert PresenceRules.from_options(None).policy('a') is None


def test_join_leave_and_members():
    table = PresenceTable(PresenceRules({'room/*': {}}))
    assert table.join('room/1', 's1', {'user': 'ann', 'worker': 0, 'extra': 'x' * 99}) is True
    assert table.join('room/1', 's1', {'user': 'ann', 'worker': 0}) is False
    assert table.join('room/1', 's2', {'user': None, 'worker': 1}) is True
    assert table.members('room/1') == {'s1': {'user': 'ann', 'worker': 0},
                                       's2': {'user': None, 'worker': 1}}
    assert table.leave('room/1', 's1') == {'user': 'ann', 'worker': 0}
    assert table.leave('room/1', 's1') is None
    assert table.leave('room/1', 's2') is not None
    assert table.members('room/1') == {} and len(table) == 0


def test_channel_without_presence_is_refused():
    table = PresenceTable(PresenceRules({'room/*': {}}))
    with pytest.raises(BrokerError) as info:
        table.join('lobby', 's1', {})
    assert 'no presence' in str(info.value)


def test_max_members_bound():
    table = PresenceTable(PresenceRules({'*': {'maxMembers': 2}}))
    table.join('c', 'a', {})
    table.join('c', 'b', {})
    with pytest.raises(BrokerError) as info:
        table.join('c', 'c', {})
    assert 'full' in str(info.value) and 'maxMembers is 2' in str(info.value)
    assert table.join('c', 'a', {'user': 'again'}) is False  # a member may refresh itself
    table.leave('c', 'b')
    assert table.join('c', 'c', {}) is True
    assert sorted(table.members('c')) == ['a', 'c']


def test_drop_owner_removes_only_its_members():
    table = PresenceTable(PresenceRules({'*': {}}))
    table.join('x', 'a', {'user': 'u'}, owner=1)
    table.join('y', 'a', {}, owner=1)
    table.join('x', 'b', {}, owner=2)
    table.join('x', 'c', {}, owner=1)
    table.join('x', 'c', {}, owner=2)  # re-joined through another connection: now owner 2's
    dropped = table.drop_owner(1)
    assert sorted((ch, sid) for ch, sid, _ in dropped) == [('x', 'a'), ('y', 'a')]
    assert sorted(table.members('x')) == ['b', 'c']
    assert table.drop_owner(1) == []
    assert len(table.drop_owner(2)) == 2 and len(table) == 0


def test_events_and_user():
    assert events_channel('room') == '#gsc/presence/room'
    assert presence_event('join', 's', {'user': 'u', 'worker': 3}) == \
        {'event': 'join', 'socketId': 's', 'user': 'u', 'worker': 3}
    assert member_user({'username': 'ann'}, 'username') == 'ann'
    assert member_user({'username': 'x' * 1000}, 'username') == 'x' * 256
    assert member_user({'username': {'a': 1}}, 'username') is None
    assert member_user({'id': 7}, 'id') == 7
    assert member_user(None, 'username') is None
    assert member_user({'username': 'ann'}, None) is None


def test_reserved_channel_error():
    assert reserved_channel_error('subscribe', 'room') is None
    assert reserved_channel_error('publish', 5) is None
    err = reserved_channel_error('subscribe', '#gsc/presence/room')
    assert isinstance(err, BrokerError) and 'reserved channel' in err.message
    assert 'reserved channel' in reserved_channel_error('publish', '#gsc/x').message
