"""The broker process: lifecycle and IPC with the master (SocketCluster's SCBroker).

Start-up: the broker controller's ``run(broker)`` (when one is named), then
:meth:`SCBroker.listen` on its unix socket ``<socketDir>/b<id>``, then
``listening`` to the master (-> ``brokerStart``).  What it serves to the workers (the
pub/sub relay and the key/value store) is :class:`gsc.cluster.brokerserver.BrokerServer`.
"""

import logging

from . import controllers
from .brokerserver import BrokerServer
from ..core.history import HistoryRules
from ..core.middleware import MIDDLEWARE_PUBLISH_IN, MIDDLEWARE_SUBSCRIBE
from .process import ClusterMember

log = logging.getLogger(__name__)

EXPIRY_ACCURACY = 5000
"""How often (ms) expired keys are purged, as the master passes to sc-broker."""


class SCBroker(ClusterMember):
    """A broker process (``broker`` in the broker controller's ``run(broker)``).

    Attributes: ``id``, ``type`` ('broker'), ``options`` (the master's options),
    ``instance_id``, ``secret_key``, ``socket_path``, ``ipc_ack_timeout``, ``data_map``
    (the key/value store), ``subscriptions`` (worker connection id -> {channel: connection}).
    Events: ``masterMessage(data, respond)``, ``subscribe(channel)``, ``unsubscribe(channel)``,
    ``publish(channel, value)``, ``message(data, respond)`` (from ``exchange.send``), ``warning``.
    """

    MIDDLEWARE_SUBSCRIBE = MIDDLEWARE_SUBSCRIBE
    MIDDLEWARE_PUBLISH_IN = MIDDLEWARE_PUBLISH_IN

    type = 'broker'
    origin_type = 'Broker'
    message_type = 'brokerMessage'

    def __init__(self, id_, options, fd, socket_path):
        ClusterMember.__init__(self, id_, options, fd)
        self.instance_id = options['instanceId']
        self.secret_key = options['secretKey']
        self.ipc_ack_timeout = options['ipcAckTimeout']
        self.socket_path = socket_path
        self.server = BrokerServer(self, socket_path, self.secret_key,
                                   options.get('expiryAccuracy') or EXPIRY_ACCURACY, self.ipc_ack_timeout,
                                   HistoryRules.from_options(options))
        self.data_map = self.server.data_map
        self.on('error', lambda err: self.report('error', err))
        self.on('warning', lambda warning: self.report('warning', warning))

    def start(self):
        """Run the controller, listen, then tell the master (``listening``)."""
        controllers.run('brokerController', self.options.get('brokerController'),
                        self.options['paths']['appDirPath'], self)
        self.listen()
        self.set_ready()
        self.channel.send('listening', {'id': self.id, 'pid': self.pid})

    def listen(self):
        """Serve the workers on ``socket_path`` (a stale socket file is removed first)."""
        self.server.start()

    def close(self):
        """Stop serving the workers (graceful termination)."""
        self.server.stop()

    @property
    def subscriptions(self):
        """Worker connection id -> {channel: connection}."""
        return self.server.subscriptions

    def publish(self, channel, message):
        """Send ``message`` to every worker subscribed to ``channel``."""
        self.server.publish(channel, message)

    def add_middleware(self, type_, fn):
        """``subscribe`` (req: socket, channel) or ``publishIn`` (req: socket, channel, command)."""
        self.server.middleware.add(type_, fn)

    def remove_middleware(self, type_, fn):
        """Remove ``fn`` from the ``type_`` chain."""
        self.server.middleware.remove(type_, fn)


def main(id_, options, fd, socket_path):
    """Entry point of a forked broker process; returns its exit code."""
    return SCBroker(id_, options, fd, socket_path).serve()
