"""The in-process engine of a standalone server: publishes go straight back to this worker.

It owns the history of its channels (:class:`gsc.core.history.HistoryStore`), as a broker does.
"""

import gevent
from gevent import get_hub

from ..core import kv
from ..core.datamap import DataMap
from ..errors import BrokerError
from ..core.history import HistoryRules, HistoryStore

PURGE_INTERVAL = 5.0
"""Seconds between two purges of expired history (reads and publishes apply the ttl at once)."""
from ..core.presence import PresenceRules, PresenceTable, events_channel, presence_event


class SimpleEngine:
    """Pub/sub inside one process (sc-simple-broker), plus an in-process key/value store."""

    def __init__(self, history_rules=None, presence_rules=None):
        self._on_message = None
        self._on_warning = None
        self.data_map = DataMap()
        self.history_rules = history_rules or HistoryRules()
        self.history_store = HistoryStore(self.history_rules)
        self._purger = None
        self.presence_table = PresenceTable(presence_rules or PresenceRules())

    def start(self, on_message, on_ready=None, on_warning=None):
        """Deliver messages to ``on_message(channel, data, position)``; ready on the next turn
        of the loop (so that listeners attached right after construction see ``ready``)."""
        self._on_message = on_message
        self._on_warning = on_warning or (lambda err: None)
        if self.history_rules:
            self._purger = get_hub().loop.timer(PURGE_INTERVAL, PURGE_INTERVAL)
            self._purger.start(self.history_store.purge_expired)
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
        """Deliver ``data`` to this worker's subscribers (kept in the channel's history, when it
        has one), then ``callback(None)``; ``callback(err)`` when history cannot encode it."""
        position = None
        if self.history_rules:
            try:
                position = self.history_store.append(channel, data)
            except ValueError as exc:
                err = BrokerError('Failed to publish to channel %s - %s' % (channel[:100], exc))
                if callback is None:
                    self._on_warning(err)
                else:
                    callback(err)
                return
        self._on_message(channel, data, position)
        if callback is not None:
            callback(None)

    def history(self, channel, since, epoch, limit, callback):
        """Read ``channel``'s history (docs/history.md); ``callback(err, result)``."""
        try:
            result = self.history_store.read(channel, since, epoch, limit)
        except Exception as exc:
            callback(exc, None)
            return
        callback(None, result)

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
        """Stop purging history."""
        if self._purger is not None:
            self._purger.close()
            self._purger = None

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
