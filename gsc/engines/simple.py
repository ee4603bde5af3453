"""The in-process engine of a standalone server: publishes go straight back to this worker."""

import gevent

from .. import kv
from ..datamap import DataMap
from ..errors import BrokerError


class SimpleEngine:
    """Pub/sub inside one process (sc-simple-broker), plus an in-process key/value store."""

    def __init__(self, history_rules=None, presence_rules=None):
        self._on_message = None
        self.data_map = DataMap()

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
