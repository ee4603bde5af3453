"""Channel presence: which channels track their subscribers, and the bounded table of members.

Sans-I/O.  :class:`PresenceRules` reads the ``channelPresence`` option (fnmatch patterns ->
policies); :class:`PresenceTable` is the member table of one owner (a broker process, or a
standalone worker): per channel ``{socket_id: info}`` with ``info = {'user', 'worker'}``,
each entry held for an ``owner`` (a broker's worker connection) so that a vanished worker's
entries go at once (:meth:`PresenceTable.drop_owner`).  The owner publishes each change as an
ordinary message on the internal channel :func:`events_channel` (``'#gsc/presence/' + channel``),
built by :func:`presence_event`.  The wire contract is in docs/presence.md.
"""

import collections

from ..errors import BrokerError
from .checks import is_int
from .patterns import ChannelRules
from .reserved import RESERVED_PREFIX

PresencePolicy = collections.namedtuple('PresencePolicy', 'max_members join_leave user_field')
"""What one channel tracks: at most ``max_members`` members; ``join_leave``: subscribers may ask
for ``#join``/``#leave`` events; ``user_field``: the auth-token field taken as a member's user."""

POLICY_DEFAULTS = {'maxMembers': 1000, 'joinLeave': True, 'userField': 'username'}
MAX_MEMBERS = 100000
"""The largest ``maxMembers`` (a ``#presence`` answer lists them all)."""
MAX_USER_CHARS = 256
"""A member's user is cut to this many characters."""
EVENTS_PREFIX = RESERVED_PREFIX + 'presence/'


def no_presence(channel):
    """The BrokerError of a presence request on a channel no ``channelPresence`` pattern matches."""
    return BrokerError('Channel %.100s has no presence (see the channelPresence option)' % channel)


def events_channel(channel):
    """The internal channel carrying the join/leave events of ``channel``."""
    return EVENTS_PREFIX + channel


def owner_channel(channel):
    """The channel whose owner carries ``channel``: for an events channel, its presence channel
    (so that a broker's join/leave events reach the workers that subscribed at that broker)."""
    return channel[len(EVENTS_PREFIX):] if channel.startswith(EVENTS_PREFIX) else channel


def presence_event(kind, socket_id, info):
    """The message an owner publishes on :func:`events_channel`: ``kind`` is 'join' or 'leave'."""
    return {'event': kind, 'socketId': socket_id, 'user': info.get('user'), 'worker': info.get('worker')}


def member_user(auth_token, user_field):
    """The user of a member: ``auth_token[user_field]`` when it is a string (cut to
    MAX_USER_CHARS), a number or a boolean; None otherwise (not authenticated, field missing)."""
    if user_field is None or not isinstance(auth_token, dict):
        return None
    user = auth_token.get(user_field)
    if isinstance(user, str):
        return user[:MAX_USER_CHARS]
    if isinstance(user, (int, float, bool)):
        return user
    return None


class PresenceRules(ChannelRules):
    """The ``channelPresence`` option compiled (:class:`gsc.core.patterns.ChannelRules`):
    ``policy(channel)`` is a :class:`PresencePolicy` or None.  A bad option raises
    InvalidOptionsError."""

    option_name = 'channelPresence'
    defaults = POLICY_DEFAULTS

    def make_policy(self, pattern, settings):
        """The :class:`PresencePolicy` of one pattern's settings."""
        max_members = settings['maxMembers']
        if not is_int(max_members) or not 1 <= max_members <= MAX_MEMBERS:
            raise self.invalid(pattern, '%r.maxMembers must be a whole number from 1 to %d, not %r'
                               % (pattern, MAX_MEMBERS, max_members))
        if not isinstance(settings['joinLeave'], bool):
            raise self.invalid(pattern, '%r.joinLeave must be true or false, not %r'
                               % (pattern, settings['joinLeave']))
        if settings['userField'] is not None and not isinstance(settings['userField'], str):
            raise self.invalid(pattern, '%r.userField must be a string or None, not %r'
                               % (pattern, settings['userField']))
        return PresencePolicy(max_members, settings['joinLeave'], settings['userField'])

    @classmethod
    def from_options(cls, options):
        """The rules of ``channelPresence`` in ``options`` (either spelling)."""
        options = options or {}
        value = options.get('channelPresence')
        return cls(options.get('channel_presence') if value is None else value)


class PresenceTable:
    """The members of the presence channels of one owner, each channel bounded by its
    policy's ``max_members``.  Entries are ``(owner, info)``; ``owner`` is whatever the caller
    uses to drop a whole group at once (a worker connection's id; None in one process)."""

    def __init__(self, rules):
        self.rules = rules
        self._channels = {}  # channel -> {socket id: (owner, info)}
        self._owned = {}     # owner -> {(channel, socket id)}

    def __len__(self):
        return sum(len(members) for members in self._channels.values())

    def join(self, channel, socket_id, info, owner=None):
        """Add (or refresh) a member; True when it is new (a join to publish).  BrokerError
        when the channel has no presence or is full."""
        policy = self.rules.policy(channel)
        if policy is None:
            raise no_presence(channel)
        members = self._channels.get(channel)
        known = members is not None and socket_id in members
        if not known and members is not None and len(members) >= policy.max_members:
            raise BrokerError('Failed to join the presence of channel %.100s - it is full (maxMembers '
                              'is %d)' % (channel, policy.max_members))
        if known:
            self._disown(members[socket_id][0], channel, socket_id)
        self._channels.setdefault(channel, {})[socket_id] = (owner, _info(info))
        self._owned.setdefault(owner, set()).add((channel, socket_id))
        return not known

    def leave(self, channel, socket_id):
        """Remove a member; its info, or None when it was not one."""
        members = self._channels.get(channel)
        entry = None if members is None else members.pop(socket_id, None)
        if entry is None:
            return None
        if not members:
            del self._channels[channel]
        self._disown(entry[0], channel, socket_id)
        return entry[1]

    def drop_owner(self, owner):
        """Remove every member held for ``owner``; ``[(channel, socket_id, info)]`` removed."""
        dropped = []
        for channel, socket_id in list(self._owned.get(owner, ())):
            info = self.leave(channel, socket_id)
            if info is not None:
                dropped.append((channel, socket_id, info))
        return dropped

    def members(self, channel):
        """``{socket_id: info}`` of ``channel`` (a copy; empty when nobody is there)."""
        members = self._channels.get(channel)
        if not members:
            return {}
        return {socket_id: dict(entry[1]) for socket_id, entry in members.items()}

    def _disown(self, owner, channel, socket_id):
        owned = self._owned.get(owner)
        if owned is not None:
            owned.discard((channel, socket_id))
            if not owned:
                del self._owned[owner]


def _info(info):
    """The kept part of a member's info: ``user`` and ``worker`` only."""
    info = info if isinstance(info, dict) else {}
    return {'user': info.get('user'), 'worker': info.get('worker')}
