"""The in-process engine of a standalone server: publishes go straight back to this worker."""

import gevent

from .. import kv
from ..datamap import DataMap
from ..errors import BrokerError
from ..presence import PresenceRules, PresenceTable, events_channel, presence_event


class SimpleEngine:
    """Pub/sub inside one process (sc-simple-broker), plus an in-process key/value store."""

    def __init__(self, history_rules=None, presence_rules=None):
        self._on_message = None
        self.data_map = DataMap()
        self.presence_table = PresenceTable(presence_rules or PresenceRules())

    def start(self, on_message, on_ready=None, on_warning=None):
        """Deliver messages to ``on_message(channel, data)``; ready on the next turn of the loop
        (so that listeners attached right after construction see ``ready``)."""
        self._on_message = on_message
        if on_ready is not None:
            gevent.spawn(on_ready)

    def subscribe(self, channel, callback=None):
        """Nothing to tell anyone: succeeds at once."""
        if callback is not None:
            callback(None)

    def unsubscribe(self, channel, callback=None):
        """Nothing to tell anyone: succeeds at once."""
        if callback is not None:
            callback(None)

    def publish(self, channel, data, callback=None):
        """Deliver ``data`` to this worker's subscribers, then ``callback(None)``."""
        self._on_message(channel, data)
        if callback is not None:
            callback(None)

    def send(self, data, map_index, callback):
        """A standalone server has no broker controllers to send to."""
        callback(BrokerError('A standalone server has no brokers to send a message to'))

    def kv(self, action, fields, callback):
        """Run a key/value command on the in-process store; ``callback(err, value)``."""
        try:
            value = kv.execute(self.data_map, action, fields)
        except Exception as exc:
            callback(exc)
            return
        callback(None, value)

    def link_states(self):
        """No links: everything is in this process."""
        return []

    def close(self):
        """Nothing to release."""

    def presence_join(self, channel, socket_id, info, callback=None):
        """Add a member (BrokerError when the channel is full); a new one's join is published."""
        try:
            new = self.presence_table.join(channel, socket_id, info)
        except BrokerError as exc:
            if callback is not None:
                callback(exc)
            return
        if new:
            self._on_message(events_channel(channel), presence_event('join', socket_id, info))
        if callback is not None:
            callback(None)

    def presence_leave(self, channel, socket_id):
        """Remove a member and publish its leave."""
        info = self.presence_table.leave(channel, socket_id)
        if info is not None:
            self._on_message(events_channel(channel), presence_event('leave', socket_id, info))

    def presence(self, channel, callback):
        """``callback(None, {socket_id: info})``."""
        callback(None, self.presence_table.members(channel))
