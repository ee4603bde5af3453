"""The master process: ``SocketCluster(options).serve_forever()`` (SocketCluster's master API:
https://socketcluster.io/docs/14.4.2/api-socketcluster).

The master forks the brokers, then (once every broker listens) the worker cluster,
which forks the workers.  It does no network I/O: it supervises, relays IPC, reports
errors and logs.  As in gunicorn's arbiter, signal handlers and exit watchers only queue
work; the run loop in the main greenlet dispatches it to ``handle_<signal>``,
:meth:`reap`, and the ``spawn_*`` methods, so every fork happens in the main greenlet.
"""

import functools
import logging
import os
import pwd
import resource
import signal
import socket
import sys
import time

import gevent

from . import broker as broker_module
from . import workercluster as cluster_module
from ..core import codec
from . import controllers, metrics
from . import options as options_module
from .. import logs
from ..version import __version__
from . import rundir
from ..core.emitter import EventEmitter
from ..errors import (BadConnectionError, BrokerError, InvalidActionError, ProcessExitError,
                     UnknownError, hydrate)
from .process import EXIT_BAD_CONTROLLER, ChildProcess, Supervisor
from .worker import MASTER_HEARS_WARNINGS

log = logging.getLogger('gsc')

WATCH_INTERVAL = 1.0
"""Seconds between two looks at controllers/ for the hot reboot of the dev environment."""
KILL_GRACE = 2.0
"""Seconds the master waits past processTermTimeout before it SIGKILLs a child."""


WEBSOCKET_ENGINE = 'gevent-websocket (upgrade) + websockets (frames)'
"""What carries the WebSockets in every gsc worker (the ``wsEngine`` option has no effect)."""


def normalise_error(value):
    """An exception for whatever was reported as an error (the master's ``fail`` event)."""
    if isinstance(value, BaseException):
        return value
    if isinstance(value, dict) and ('message' in value or 'stack' in value):
        return hydrate(value)
    if callable(value):
        return UnknownError('[function %s]' % (getattr(value, '__name__', None) or 'anonymous'))
    if value is None:
        return UnknownError('null')
    if isinstance(value, (dict, list)):
        try:
            return UnknownError(codec.encode(value))
        except ValueError:
            return UnknownError('[object NotJSON]')
    return UnknownError(str(value))


def check_port_free(host, port):
    """InvalidActionError when something already listens on ``host:port``.

    The workers bind with SO_REUSEPORT, which would let a second cluster share the port with
    the first (the kernel would split the connections between two unrelated clusters); a
    probe without it fails with EADDRINUSE while any other socket listens there.
    """
    if not port:
        return
    host = host or '0.0.0.0'
    probe = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        raise InvalidActionError('Cannot listen on %s:%d - %s (another gsc or another program '
                                 'serves it)' % (host, port, exc.strerror or exc)) from None
    finally:
        probe.close()


def raise_open_files_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit; the brokers and workers inherit it
    (a worker's default maxConnections is sized from it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning('Could not raise the open files limit from %s to %s: %s', soft, hard, exc)


class SocketCluster(EventEmitter, Supervisor):
    """The master of a cluster of brokers and workers (a singleton per process).

    ``SocketCluster(options)`` merges and validates the options (a bad option is
    reported as ``fail``, not raised); :meth:`serve_forever` starts the process tree and
    supervises it until :meth:`destroy`, SIGTERM or SIGINT shut it down.

    Attributes: ``options`` (the effective options, as every process sees them),
    ``app_dir_path``, ``socket_dir_path``, ``worker_cluster`` and ``brokers``
    (:class:`~gsc.cluster.process.ChildProcess` handles), ``is_worker_cluster_ready``,
    ``worker_cluster_message_buffer``, ``is_shutting_down``, ``init_error``.
    """

    EVENT_FAIL = 'fail'
    EVENT_WARNING = 'warning'
    EVENT_INFO = 'info'
    EVENT_READY = 'ready'
    EVENT_WORKER_START = 'workerStart'
    EVENT_WORKER_EXIT = 'workerExit'
    EVENT_WORKER_MESSAGE = 'workerMessage'
    EVENT_BROKER_START = 'brokerStart'
    EVENT_BROKER_EXIT = 'brokerExit'
    EVENT_BROKER_MESSAGE = 'brokerMessage'
    EVENT_WORKER_CLUSTER_START = 'workerClusterStart'
    EVENT_WORKER_CLUSTER_READY = 'workerClusterReady'
    EVENT_WORKER_CLUSTER_EXIT = 'workerClusterExit'

    _instance = None

    def __init__(self, options=None):
        if SocketCluster._instance is not None:
            raise InvalidActionError('The SocketCluster master object is a singleton; it can '
                                     'only be instantiated once per process')
        SocketCluster._instance = self
        EventEmitter.__init__(self)
        Supervisor.__init__(self)
        self.pid = os.getpid()
        self.options = options_module.merge(options)
        logs.configure(self.options.get('logLevel'))
        paths = self.options.get('paths') or {}
        self.app_dir_path = paths.get('appDirPath') or os.path.dirname(
            os.path.abspath(sys.argv[0] or '.'))
        self.socket_dir_path = None
        self._run_user = None
        self.worker_cluster = None
        self.brokers = {}
        self.is_worker_cluster_ready = False
        self.worker_cluster_message_buffer = []
        self.is_shutting_down = False
        self.init_error = None
        self._broker_buffers = {}
        self._ready_once = False
        self.start_failure = None
        self._start_timer = None
        self._destroy_callbacks = []
        self._signal_watchers = []
        self._watcher = None
        self.metrics = metrics.MasterMetrics(self)
        if callable(self.options.get('run')):
            self.run = self.options['run']
        self.on('error', lambda err: self.emit_fail(err, self._origin()))
        try:
            options_module.validate(self.options)
            for hint in options_module.misspelt_keys(self.options):
                log.warning(hint)
            options_module.generate_secrets(self.options)
            self._run_user = self._downgrade_user()
            self.socket_dir_path = os.path.join(rundir.run_dir(
                rundir.base_dir(self.options.get('socketRoot'), self._owner()[0]),
                self.options['appName'], self.pid), '')
            self.options['paths'] = {
                'appDirPath': self.app_dir_path, 'statusURL': '/~status',
                'socketDirPath': self.socket_dir_path,
                'brokerSocketPaths': [self.broker_socket_path(i)
                                      for i in range(self.options['brokers'])]}
            self.options['sourcePort'] = self.options['port']
            self.options['workerCount'] = self.options['workers']
        except Exception as exc:
            self.init_error = exc
            gevent.spawn(self.emit_fail, exc, self._origin())

    # -- public API ----------------------------------------------------------------

    def run(self):
        """User hook called once, right after the first ``ready`` (or ``options['run']``)."""

    def serve_forever(self):
        """Start the process tree and supervise it until it is shut down (main greenlet).

        Returns False when the options were invalid (the ``fail`` was emitted) or the start
        failed (``start_failure`` says why: a child exited, or not every worker listened
        within ``startTimeout``), else True.
        """
        if self.init_error is not None:
            gevent.sleep(0)
            self._release()
            return False
        try:
            self._start()
        except Exception as exc:
            self.emit_fail(exc, self._origin())
            self._release()
            return False
        self.run_loop()
        return self.start_failure is None

    def send_to_worker(self, worker_id, data, callback=None):
        """Send ``data`` to worker ``worker_id``; ``callback(err, data, worker_id)`` answers.

        Messages sent before the worker cluster is ready are buffered, then flushed.
        """
        if self.is_worker_cluster_ready and not self.worker_cluster.exited:
            self._send_to_worker(worker_id, data, callback)
        else:
            self.worker_cluster_message_buffer.append((worker_id, data, callback))

    def send_to_broker(self, broker_id, data, callback=None):
        """Send ``data`` to broker ``broker_id``; ``callback(err, data, broker_id)`` answers."""
        if not (isinstance(broker_id, int) and 0 <= broker_id < self._broker_count()):
            err = BrokerError('Broker with id %s does not exist' % (broker_id,))
            self.emit_fail(err, self._origin('BrokerEngine'))
            if callback is not None:
                callback(err, None, broker_id)
            return
        child = self.brokers.get(broker_id)
        reply = None if callback is None else (
            lambda err, response: callback(err, response, broker_id))
        if child is None:
            self._broker_buffers.setdefault(broker_id, []).append((data, reply))
        else:
            child.send('masterMessage', data, reply)

    def kill_workers(self, options=None):
        """Reboot the workers (``{'immediate': True}`` to skip the graceful close;
        ``{'killClusterMaster': True}`` ends the worker cluster too)."""
        if self.worker_cluster is not None and not self.worker_cluster.exited:
            self.worker_cluster.send('terminate', dict(options or {}))

    def kill_brokers(self):
        """SIGTERM every broker; each is reported and respawned."""
        for child in list(self.brokers.values()):
            child.kill(signal.SIGTERM)

    def destroy(self, callback=None):
        """Shut the whole tree down gracefully; ``callback()`` once every child exited."""
        if callback is not None:
            self._destroy_callbacks.append(callback)
        if self.is_shutting_down:
            return
        self.is_shutting_down = True
        if self._start_timer is not None:
            self._start_timer.kill(block=False)
        self._drop_worker_messages('the master is shutting down')
        if self._watcher is not None:
            self._watcher.kill(block=False)
        self.kill_workers({'killClusterMaster': True})
        for child in self.brokers.values():
            child.kill(signal.SIGTERM)
        gevent.spawn_later(self.options['processTermTimeout'] / 1000.0 + KILL_GRACE,
                           self._kill_remaining)
        self.call_in_loop(self._finish_if_done)

    def log(self, message):
        """Log ``message`` as a notice of the master (logLevel 2)."""
        log.info('%s', message)

    def color_text(self, message, color):
        """``message`` in ANSI ``color`` ('red', 'green', 'yellow' or a raw SGR code), on a
        terminal without ``NO_COLOR`` only."""
        return logs.paint(message, {'red': 31, 'green': 32, 'yellow': 33}.get(color, color))

    def emit_fail(self, err, origin, trace=None):
        """Emit ``fail`` with ``err`` normalised and tagged with ``origin`` and ``time``; log it
        in one line, with ``trace`` (a traceback text) when the cause is in user code."""
        self._emit_report('fail', err, origin, logging.ERROR, trace)

    def emit_warning(self, warning, origin, trace=None):
        """Emit ``warning`` with ``warning`` normalised and tagged with ``origin`` and ``time``;
        log it like :meth:`emit_fail`."""
        self._emit_report('warning', warning, origin, logging.WARNING, trace)

    def _emit_report(self, event, err, origin, level, trace):
        if trace is None:
            trace = logs.traceback_to_log(err)
        err = normalise_error(err)
        err.origin = origin
        err.time = int(time.time() * 1000)
        self.emit(event, err)
        if not self.is_shutting_down:
            self._log_report(level, err, origin, trace)

    def broker_socket_path(self, broker_id):
        """The unix socket of broker ``broker_id``."""
        return '%sb%d' % (self.socket_dir_path, broker_id)

    # -- signals -------------------------------------------------------------------

    def handle_term(self):
        """SIGTERM: shut everything down gracefully."""
        log.info('Master received SIGTERM - Shutting down')
        self.destroy()

    def handle_int(self):
        """SIGINT (Ctrl-C): shut everything down gracefully."""
        log.info('Master received SIGINT - Shutting down')
        self.destroy()

    def handle_usr2(self):
        """SIGUSR2: reboot the workers (at once in 'dev', else gracefully)."""
        if not self._ready_once or self.is_shutting_down:
            return
        immediate = self.options['environment'] == 'dev'
        self.emit_warning(ProcessExitError(
            'Master received SIGUSR2 signal - Shutting down all workers %s'
            % ('immediately' if immediate else
               'gracefully within processTermTimeout limit'), code=None, signal='SIGUSR2'),
            self._origin())
        self.kill_workers({'immediate': immediate})
        if self.options['killMasterOnSignal']:
            self.destroy()

    # -- processes (run loop only) ---------------------------------------------------

    def spawn_broker(self, broker_id, respawn=False):
        """Fork broker ``broker_id`` and flush what was sent to it meanwhile."""
        if self.is_shutting_down:
            return
        main = functools.partial(broker_module.main, broker_id, self.options,
                                 socket_path=self.broker_socket_path(broker_id))
        child = ChildProcess('broker', broker_id, main, self.handle_broker_message, self._on_exit,
                             self.options['ipcAckTimeout'], respawn, self.options['appName'])
        self.brokers[broker_id] = child.start()
        for data, reply in self._broker_buffers.pop(broker_id, ()):
            child.send('masterMessage', data, reply)

    def spawn_worker_cluster(self, respawn=False):
        """Fork the worker cluster (which forks the workers)."""
        if self.is_shutting_down:
            return
        # the workers skip the warnings of their clients when nobody here would see them
        self.options[MASTER_HEARS_WARNINGS] = self.has_listeners('warning')
        main = functools.partial(cluster_module.main, self.options)
        child = ChildProcess('workerCluster', None, main, self.handle_worker_cluster_message,
                             self._on_exit, self.options['ipcAckTimeout'], respawn,
                             self.options['appName'])
        self.worker_cluster = child.start()
        self.emit('workerClusterStart', {'pid': child.pid, 'childProcess': child})

    def reap(self, child):
        """Report an exited child; respawn it unless shutting down or its controller is broken.
        A child that exits before the first ``ready`` fails the start."""
        child.reaped = True
        if child.kind == 'broker':
            self._reap_broker(child)
        else:
            self._reap_worker_cluster(child)
        if not self._ready_once and not self.is_shutting_down:
            self.fail_start('the %s exited with code %s while starting'
                            % (logs.process_name(child.kind, child.id), child.code))
        if self.is_shutting_down:
            self._finish_if_done()
        elif child.code == EXIT_BAD_CONTROLLER:
            log.error('The %s %s will not be respawned: its controller failed', child.kind,
                      '' if child.id is None else child.id)
        elif child.kind == 'broker':
            self.respawn(child, self.spawn_broker, child.id, True)
        else:
            self.respawn(child, self.spawn_worker_cluster, True)

    def _reap_broker(self, child):
        if not (self.is_shutting_down and child.code == 0):
            text = 'Broker server at socket path %s exited with code %s' % (
                self.broker_socket_path(child.id), child.code)
            if child.signal:
                text += ' and signal %s' % child.signal
            self.emit_fail(ProcessExitError(text, code=child.code, signal=child.signal),
                           self._origin('BrokerEngine'))
        self.emit('brokerExit', {'id': child.id, 'pid': child.pid, 'code': child.code,
                                 'signal': child.signal})

    def _reap_worker_cluster(self, child):
        self.is_worker_cluster_ready = False
        self._drop_worker_messages('the worker cluster exited')
        if child.code != 0 and not self.is_shutting_down:
            text = 'WorkerCluster exited with code %s' % child.code
            if child.signal:
                text += ' and signal %s' % child.signal
            self.emit_fail(ProcessExitError(text, code=child.code, signal=child.signal),
                           self._origin('WorkerCluster', child.pid))
        elif not self.is_shutting_down:
            log.info('WorkerCluster exited with code 0')
        self.emit('workerClusterExit', {'pid': child.pid, 'code': child.code,
                                        'signal': child.signal, 'childProcess': child})

    # -- messages ------------------------------------------------------------------

    def handle_broker_message(self, child, message, respond):
        """``listening``, ``brokerMessage``, ``error`` and ``warning`` from a broker."""
        kind = message['type']
        if kind == 'listening':
            child.ready = True
            self.emit('brokerStart', {'id': child.id, 'pid': child.pid, 'respawn': child.respawn})
            if self.worker_cluster is None and len(self.brokers) == self._broker_count() \
                    and all(b.ready for b in self.brokers.values()):
                self.call_in_loop(self.spawn_worker_cluster)
        elif kind == 'brokerMessage':
            self.emit('brokerMessage', child.id, message.get('data'), respond)
        elif kind in ('error', 'warning'):
            self._report(kind, message.get('data') or {}, child)

    def handle_worker_cluster_message(self, child, message, respond):
        """Worker events relayed by the worker cluster, and its own reports."""
        kind = message['type']
        data = message.get('data')
        if kind == 'workerStart':
            self.emit('workerStart', data)
        elif kind == 'workerExit':
            self._log_worker_exit(data)
            self.emit('workerExit', data)
            if not self._ready_once and not self.is_shutting_down:
                self.fail_start('the %s exited with code %s while starting'
                                % (logs.process_name('worker', data.get('id')), data.get('code')))
        elif kind == 'ready':
            self._on_worker_cluster_ready(child)
        elif kind == 'workerMessage':
            self.emit('workerMessage', message.get('workerId'), data, respond)
        elif kind in ('error', 'warning'):
            self._report(kind, data or {}, child)
        elif kind == 'metrics':
            self.metrics.answer(data, respond)

    def _on_worker_cluster_ready(self, child):
        self.is_worker_cluster_ready = True
        if not self._ready_once:
            self._ready_once = True
            self._start_timer.kill(block=False)
            self._log_banner()
            self.emit('ready')
            self.run()
        buffered, self.worker_cluster_message_buffer = self.worker_cluster_message_buffer, []
        for worker_id, data, callback in buffered:
            self._send_to_worker(worker_id, data, callback)
        self.emit('workerClusterReady', {'pid': child.pid, 'childProcess': child})

    def _send_to_worker(self, worker_id, data, callback):
        reply = None if callback is None else (
            lambda err, response: callback(err, response, worker_id))
        self.worker_cluster.send('masterMessage', data, reply, workerId=worker_id)

    def _report(self, kind, data, child):
        origin = data.get('origin') or {}
        origin = {'type': origin.get('type') or child.kind, 'pid': origin.get('pid', child.pid),
                  'id': origin.get('id', child.id)}
        error, trace = data.get('error'), data.get('trace')
        if kind == 'error':
            self.emit_fail(error, origin, trace)
        else:
            self.emit_warning(error, origin, trace)

    # -- internals -------------------------------------------------------------------

    def _start(self):
        logs.set_identity('master', None, self.options['appName'])
        check_port_free(self.options.get('host'), self.options['port'])
        raise_open_files_limit()
        self.metrics.listen()
        self._make_socket_dir()
        self._signal_watchers = [self.install_signal(signal.SIGTERM, self.handle_term),
                                 self.install_signal(signal.SIGINT, self.handle_int)]
        if self.options['rebootOnSignal']:
            self._signal_watchers.append(self.install_signal(signal.SIGUSR2, self.handle_usr2))
        log.info('%s Launching SocketCluster', self.color_text('[Busy]', 'yellow'))
        for broker_id in range(self.options['brokers']):
            self.spawn_broker(broker_id)
        if not self.options['brokers']:  # another engine (Redis) carries pub/sub
            self.call_in_loop(self.spawn_worker_cluster)
        if self.options['environment'] == 'dev':
            self._watcher = gevent.spawn(self._watch_controllers)
        self._start_timer = gevent.spawn_later(
            self.options['startTimeout'] / 1000.0, self.call_in_loop, self.fail_start,
            'not every worker listened within startTimeout (%d ms)' % self.options['startTimeout'])

    def fail_start(self, reason):
        """End a start that cannot succeed: one line naming ``reason``, every child stopped,
        then :meth:`serve_forever` returns False (``run.py`` and ``gsc`` exit with 1)."""
        if self.start_failure is not None or self._ready_once or self.is_shutting_down:
            return
        self.start_failure = reason
        log.error('gsc could not start: %s - stopping', reason)
        self.destroy()

    def _make_socket_dir(self):
        if self._run_user is not None:
            controllers.check_readable_by(self.options, self.app_dir_path, self._run_user)
        uid, gid = self._owner()
        rundir.create(self.options.get('socketRoot'), self.options['appName'], self.pid, uid, gid)

    def _owner(self):
        """``(uid, gid)`` of the children: the downgradeToUser's, else this process's."""
        if self._run_user is not None:
            return self._run_user.pw_uid, self._run_user.pw_gid
        return os.getuid(), os.getgid()

    def _downgrade_user(self):
        """The ``pwd`` entry of ``downgradeToUser``, None without one."""
        user = self.options.get('downgradeToUser')
        if not user:
            return None
        try:
            return pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
        except KeyError as exc:
            raise InvalidActionError('Failed to downgrade to user "%s" - %s' % (user, exc)) from None

    def _watch_controllers(self):
        """Reboot the workers when a file of controllers/ changes (dev environment)."""
        def snapshot():
            stamps = {}
            for path in controllers.watched_files(self.app_dir_path):
                try:
                    stamps[path] = os.stat(path).st_mtime_ns
                except OSError:
                    pass
            return stamps
        before = snapshot()
        while True:
            gevent.sleep(WATCH_INTERVAL)
            now = snapshot()
            if now != before:
                before = now
                log.info('Change detected in controllers/ - Rebooting the workers')
                self.kill_workers({'immediate': True})

    def _drop_worker_messages(self, reason):
        buffered, self.worker_cluster_message_buffer = self.worker_cluster_message_buffer, []
        for worker_id, _data, callback in buffered:
            if callback is not None:
                callback(BadConnectionError('Message to worker %s dropped: %s'
                                            % (worker_id, reason)), None, worker_id)

    def _on_exit(self, child):
        self.call_in_loop(self.reap, child)

    def _children(self):
        children = list(self.brokers.values())
        if self.worker_cluster is not None:
            children.append(self.worker_cluster)
        return children

    def _kill_remaining(self):
        for child in self._children():
            if child.kill(signal.SIGKILL):
                log.warning('%r did not exit within processTermTimeout: killed', child)

    def _finish_if_done(self):
        # reaped, not exited: every exit event is emitted before the listeners are dropped
        if not self.is_shutting_down or not all(c.reaped for c in self._children()):
            return
        if self.socket_dir_path:
            rundir.remove_tree(self.socket_dir_path)
        self._release()
        callbacks, self._destroy_callbacks = self._destroy_callbacks, []
        self.off()
        self.stop_loop()
        for callback in callbacks:
            callback()

    def _release(self):
        self.metrics.close()
        for watcher in self._signal_watchers:
            watcher.cancel()
        self._signal_watchers = []
        if SocketCluster._instance is self:
            SocketCluster._instance = None

    def _broker_count(self):
        brokers = self.options.get('brokers')
        return brokers if isinstance(brokers, int) and brokers >= 0 else 1

    def _origin(self, type_='Master', pid=None):
        return {'type': type_, 'pid': self.pid if pid is None else pid}

    def _log_report(self, level, err, origin, trace):
        """One line for a report (a traceback under it only when ``trace`` is given), with the
        origin of the process that reported it."""
        text = '%s: %s' % (getattr(err, 'name', None) or type(err).__name__, err)
        if trace:
            text += '\n' + trace
        log.log(level, '%s', text, extra={'origin': '%s (pid %s)' % (
            logs.process_name(origin.get('type'), origin.get('id')), origin.get('pid'))})

    def _log_worker_exit(self, data):
        text = 'Worker %s exited - Exit code: %s' % (data.get('id'), data.get('code'))
        if data.get('signal'):
            text += ', signal: %s' % data['signal']
        log.log(logging.WARNING if data.get('code') else logging.INFO, '%s', text)

    def _log_banner(self):
        options = self.options
        log.info('%s SocketCluster started - %s - Version: %s, Environment: %s, WebSocket '
                 'engine: %s, Broker engine: %s, Port: %s, Master PID: %s, Worker count: %s, '
                 'Broker count: %s', self.color_text('[Active]', 'green'), self.urls(),
                 __version__, options['environment'], WEBSOCKET_ENGINE, options['brokerEngine'],
                 options['port'], self.pid, options['workers'], options['brokers'])

    def urls(self):
        """What the workers serve: ``http://HOST:PORT/`` and the realtime ``ws://`` URL."""
        options = self.options
        host = options.get('host') or '0.0.0.0'
        shown = '127.0.0.1' if host in ('0.0.0.0', '::') else host
        if ':' in shown:
            shown = '[%s]' % shown
        secure = 's' if options.get('protocol') == 'https' else ''
        text = 'http%s://%s:%s/ and ws%s://%s:%s%s' % (secure, shown, options['port'], secure,
                                                      shown, options['port'], options['path'])
        if shown != host:
            text += ' (listening on all interfaces)'
        return text
