"""The worker process: an HTTP server with an SCServer, run by the worker controller.

Start-up (docs/ARCHITECTURE.md): the HTTP server and the SCServer are built, the ``wsgiApp``
of the options is imported and served beside the realtime path, the worker controller's
``run(worker)`` is called (it may set another app: ``worker.set_wsgi_app``), then the worker
starts listening on the shared port (its own socket with SO_REUSEPORT, so the kernel
balances connections between the workers) and tells the worker cluster it is ready.
A worker respawned after the cluster's first good start listens before all that: the worker
cluster opens its listening socket before the fork (see :meth:`SCWorker.start`).

Warnings: the worker's ``warning`` listeners get every one at once.  The master gets the
worker's own warnings at once, and the SCServer's (which clients cause at will) as a
digest (:mod:`gsc.reporting`): the first of a kind, then one summary per kind per 10 s,
without a stack of the reporting code; nothing when the master would neither print
them (``logLevel`` below 2) nor emit them to a listener.
"""

import logging
import socket
import sys

import gevent
import gevent.event
import gevent.socket
from gevent.pywsgi import LoggingLogAdapter

from . import controllers, dashboard, metrics
from ..engines import create_engine
from .brokerclient import BrokerEngine
from ..core.history import HistoryRules
from ..errors import HTTPServerError, ResourceLimitError
from ..server.http import HTTPServer
from .memory import MemoryReleaser, freeze_startup_objects, resident_bytes
from .options import LOCAL_BROKER_ENGINES, ssl_kwargs
from ..core.presence import PresenceRules
from .process import ClusterMember
from ..reporting import WarningDigest
from ..server.scserver import attach

log = logging.getLogger(__name__)

DEFAULT_BACKLOG = 511
MASTER_HEARS_WARNINGS = '_masterHearsWarnings'
"""The option the master sets for its workers: True when it has ``warning`` listeners."""


def bind_listener(options):
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (not listening yet)."""
    host = options.get('host') or '0.0.0.0'
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, options['port']))
    return sock


def listen_backlog(options):
    """The ``listen()`` backlog: ``tcpSynBacklog``, or 511."""
    return options.get('tcpSynBacklog') or DEFAULT_BACKLOG


def open_listener(options):
    """The fd of a listening socket of ``host:port`` (SO_REUSEPORT), opened in the worker
    cluster for a respawned worker; None when it cannot be opened (the worker then binds
    itself and reports why)."""
    try:
        sock = bind_listener(options)
        sock.listen(listen_backlog(options))
    except OSError as exc:
        log.warning('Could not listen for the respawned worker before its start: %s', exc)
        return None
    return sock.detach()


def access_log(options):
    """pywsgi's request log for the ``accessLog`` option: the ``gsc.access`` logger, or None."""
    if not options.get('accessLog'):
        return None
    return LoggingLogAdapter(logging.getLogger('gsc.access'), logging.INFO)


class SCWorker(ClusterMember):
    """A worker process (``worker`` in the worker controller's ``run(worker)``).

    Attributes: ``id``, ``is_leader`` (id 0), ``type`` ('worker'), ``options`` (every
    option of the master plus ``id``), ``respawn`` (it replaces a worker that exited after
    the cluster's first good start, and got its listening socket from the worker cluster),
    ``is_terminating``, ``http_server``,
    ``sc_server``, ``exchange``.  Events: ``masterMessage(data, respond)``, ``error``,
    ``warning``, ``ready``, ``connection(socket, status)``.
    """

    type = 'worker'
    origin_type = 'Worker'
    message_type = 'workerMessage'
    EVENT_ERROR = 'error'
    EVENT_WARNING = 'warning'
    EVENT_READY = 'ready'
    EVENT_CONNECTION = 'connection'

    def __init__(self, id_, options, fd, listener_fd=None):
        options = dict(options, id=id_)
        ClusterMember.__init__(self, id_, options, fd)
        self.is_leader = id_ == 0
        self.respawn = listener_fd is not None
        self.http_server = None
        self.sc_server = None
        self.exchange = None
        self._listener = None if listener_fd is None else gevent.socket.socket(fileno=listener_fd)
        self._http_requests = 0
        self._ws_requests = 0
        self._messages_seen = 0
        self._rpm = (0, 0)
        self._status_timer = None
        self._memory_releaser = None
        self._server_warning = None
        self._warning_digest = WarningDigest(self._report_server_warning)
        self.on('error', self._on_error)
        self.on('warning', self._on_warning)

    def start(self):
        """Build the servers, run the controller, listen, then report ready.

        A respawned worker (``respawn``) listens from its fork on: the kernel takes its
        connections (up to ``tcpSynBacklog``) while the servers are built and the controller
        runs, and they are served once it ran; with the cluster's brokers the controller runs
        before the links are up (they queue the exchange's commands until then).  Either way
        the worker reports ready with its controller run and its engine up, its start-up
        objects frozen out of the garbage collector's full collections and its
        :class:`~gsc.cluster.memory.MemoryReleaser` checking (:mod:`gsc.cluster.memory`).
        """
        options = self.options
        if self._listener is None:
            self._listener = bind_listener(options)
        self._build_servers()
        if not (self.respawn and isinstance(self.exchange.engine, BrokerEngine)):
            self._wait_for_engine()
        self._status_timer = gevent.spawn(self._watch_status)
        controllers.run('workerController', options['workerController'],
                        options['paths']['appDirPath'], self)
        if not self.respawn:
            self._listener.listen(listen_backlog(options))
        self.http_server.start()
        self._wait_for_engine()
        freeze_startup_objects()
        self._memory_releaser = MemoryReleaser(self.sc_server, options).start()
        self.set_ready()
        self.channel.send('ready', {'id': self.id, 'pid': self.pid})
        self.emit('ready')

    def _build_servers(self):
        """The HTTP server on the bound socket, its SCServer and the options' ``wsgiApp``."""
        options = self.options
        self.http_server = HTTPServer(self._listener, log=access_log(options),
                                      **ssl_kwargs(options))
        self.http_server.routes = metrics.worker_routes(self)
        self.sc_server = attach(self.http_server, options, self._broker_engine())
        self.exchange = self.sc_server.exchange
        self.exchange.worker_id = self.id
        dashboard.attach(self)
        self.sc_server.on('connection', self._on_connection)
        self.sc_server.on('error', lambda err: self.emit('error', err))
        self.sc_server.on('warning', self._on_server_warning)
        if options.get('wsgiApp'):
            self.set_wsgi_app(controllers.wsgi_app(options['wsgiApp'],
                                                   options['paths']['appDirPath']))

    def _broker_engine(self):
        """The links to the cluster's broker processes (``brokerEngine`` 'sc-broker-cluster'),
        or Redis (given at most ``startTimeout`` and 10 s to connect); None for another engine,
        which the SCServer builds from the options."""
        options = self.options
        history_rules = HistoryRules.from_options(options)
        if options.get('brokerEngine') == 'redis':
            return create_engine('redis', options.get('brokerEngineOptions'),
                                 start_timeout=options.get('startTimeout'), history_rules=history_rules,
                                 presence_rules=PresenceRules.from_options(options))
        if options.get('brokerEngine') not in LOCAL_BROKER_ENGINES:
            return None
        return BrokerEngine(options['paths']['brokerSocketPaths'], options['secretKey'],
                            options['ipcAckTimeout'], batch_duration=options.get('pubSubBatchDuration'),
                            max_queue_bytes=options.get('maxBrokerQueueBytes'), history_rules=history_rules)

    def _wait_for_engine(self):
        """Block until the engine is up (every broker linked): run() comes after that.
        An engine with a ``start_timeout`` that is not up by then fails the start."""
        ready = gevent.event.Event()
        self.sc_server.on('ready', ready.set)
        engine = self.exchange.engine
        if not self.sc_server.is_ready and not ready.wait(getattr(engine, 'start_timeout', None)):
            raise engine.start_failure()

    def set_wsgi_app(self, app):
        """Serve the WSGI ``app`` (Flask, Django, ...) for every non-realtime request."""
        def counted(environ, start_response):
            self._http_requests += 1
            try:
                return app(environ, start_response)
            except Exception:  # the app's bug costs one request (500), never the worker
                log.exception('The WSGI app failed on %s %s', environ.get('REQUEST_METHOD'),
                              environ.get('PATH_INFO'))
                start_response('500 Internal Server Error',
                               [('Content-Type', 'text/plain; charset=utf-8')], sys.exc_info())
                return [b'Internal Server Error']
        self.http_server.set_wsgi_app(counted)

    def get_status(self):
        """``{clientCount, httpRPM, wsRPM}`` (requests per minute over the last interval)."""
        client_count = self.sc_server.clients_count if self.sc_server is not None else 0
        return {'clientCount': client_count, 'httpRPM': self._rpm[0], 'wsRPM': self._rpm[1]}

    def close(self):
        """Disconnect every socket and stop the HTTP server."""
        if self._status_timer is not None:
            self._status_timer.kill(block=False)
        if self._memory_releaser is not None:
            self._memory_releaser.stop()
        if self.sc_server is not None:
            self.sc_server.close()
        if self.http_server is not None:
            self.http_server.stop(timeout=self.options['processTermTimeout'] / 1000.0)

    def on_uncaught(self, err):
        """An uncaught exception is a worker ``error`` (fatal when crashWorkerOnError)."""
        self.emit('error', err)

    def _on_connection(self, socket, *status):
        self._ws_requests += 1
        self.emit('connection', socket, *status)

    def _on_error(self, err):
        if isinstance(err, str):
            err = HTTPServerError(err)
        if self.options['propagateErrors']:
            self.report('error', err)
        if self.options['crashWorkerOnError']:
            self.exit(1)

    def _on_server_warning(self, warning):
        """A warning of the SCServer: re-emitted, then reported as a digest (see _on_warning)."""
        self._server_warning = warning
        try:
            self.emit('warning', warning)
        finally:
            self._server_warning = None

    def _on_warning(self, warning):
        if not self._reports_warnings():
            return
        if warning is self._server_warning:
            self._warning_digest.add(warning)
        else:
            self.report('warning', warning)

    def _reports_warnings(self):
        """Whether warnings go to the master: propagated, and printed or listened to there."""
        options = self.options
        return (options['propagateErrors'] and options['propagateWarnings']
                and (options['logLevel'] > 1 or options.get(MASTER_HEARS_WARNINGS, True)))

    def _report_server_warning(self, warning):
        self.report('warning', warning, capture_stack=False)

    def _watch_status(self):
        interval = self.options['workerStatusInterval'] / 1000.0
        threshold = self.options.get('killWorkerMemoryThreshold')
        while True:
            gevent.sleep(interval)
            scale = 60.0 / interval if interval else 0
            messages = self.sc_server.messages_received
            self._rpm = (int(self._http_requests * scale),
                         int((self._ws_requests + messages - self._messages_seen) * scale))
            self._http_requests = self._ws_requests = 0
            self._messages_seen = messages
            if threshold and resident_bytes() > threshold:
                self.emit('warning', ResourceLimitError(
                    'Worker killed itself because its memory usage of %d exceeded the '
                    'killWorkerMemoryThreshold of %d' % (resident_bytes(), threshold)))
                self.exit(0)


def main(id_, options, fd, listener_fd=None):
    """Entry point of a forked worker process; returns its exit code.  ``listener_fd``: the
    listening socket the worker cluster opened for a respawned worker."""
    return SCWorker(id_, options, fd, listener_fd).serve()
