"""Forked child processes: a clean start in the child, a supervised handle in the parent.

gevent keeps a parent's greenlets and timers scheduled in a forked child, so every
fork in gsc happens in the main greenlet, and the child starts by :func:`reset_after_fork`:
default signal dispositions, the inherited hub destroyed (its greenlets never run again,
nor are their ``finally`` blocks run), inherited link fds closed.  The parent side is a
:class:`ChildProcess`: pid, IPC :class:`~gsc.cluster.ipc.Channel`, and a greenlet waiting for
the exit.
"""

import ctypes
import gc
import logging
import math
import os
import signal
import socket
import sys
from typing import Optional

import gevent
import gevent.event
import gevent.os
import gevent.queue
import greenlet
from gevent import monkey

from .. import logs
from . import ipc, metrics
from ..core.emitter import EventEmitter
from ..errors import InvalidActionError

log = logging.getLogger(__name__)

EXIT_BAD_CONTROLLER = 78
"""Exit code of a child whose controller cannot be loaded or fails at start (EX_CONFIG):
its parent reports it once and does not respawn it in a loop."""

MAX_RESPAWN_DELAY = 10.0
"""Longest wait before respawning a child that keeps crashing before it is ready."""

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                   signal.SIGUSR2, signal.SIGCHLD, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1
_inherited: list = []
_signal_handlers: list = []


def install_signal_handler(signum, handler, *args):
    """``gevent.signal_handler`` that a forked child cancels (libev would keep it attached to
    the parent's loop and never deliver the signal to the child's own handler)."""
    watcher = gevent.signal_handler(signum, handler, *args)
    _signal_handlers.append(watcher)
    return watcher


def signal_name(signum):
    """``'SIGTERM'`` for 15; None for None."""
    if signum is None:
        return None
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def signal_number(name):
    """The number of a signal given as ``'SIGHUP'``, ``'HUP'`` or an int."""
    if isinstance(name, int):
        return name
    name = str(name).upper()
    return int(getattr(signal, name if name.startswith('SIG') else 'SIG' + name))


def _close_now(fd):
    """``os.close`` itself, even in a monkey-patched process (gevent's patched close waits for
    the next turn of the loop, which a freshly forked child destroys: the fd would leak into
    the child, keep the link open, and hide its EOF from the parent)."""
    monkey.get_original('os', 'close')(fd)


def reset_after_fork(keep_fds=()):
    """Make a freshly forked child clean: call first thing in the child, in the main greenlet."""
    if greenlet.getcurrent().parent is not None:
        raise RuntimeError('gsc forks only from the main greenlet')
    for watcher in _signal_handlers:
        watcher.cancel()
    del _signal_handlers[:]
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    # Keep every inherited greenlet referenced: collecting one would run its finally blocks here.
    _inherited.extend(obj for obj in gc.get_objects() if isinstance(obj, greenlet.greenlet))
    hub = gevent.get_hub()
    _inherited.append(hub)
    hub.destroy(destroy_loop=True)
    ipc.close_inherited(keep_fds)
    _die_with_parent()


def _die_with_parent():
    """Ask Linux for SIGTERM when the parent dies (the link EOF is the portable path)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def downgrade_to_user(user):
    """setgid/setuid to ``user`` (a name or a uid); InvalidActionError when impossible.

    What the process may import lazily later is imported first: the interpreter's own files
    may not be readable by ``user`` (e.g. a Python installed under /root).
    """
    import encodings.idna  # noqa: F401  (the resolver and TLS)
    import encodings.latin_1  # noqa: F401  (HTTP headers)
    import encodings.utf_16_le  # noqa: F401  (the channel hash)
    import pwd
    gevent.get_hub().resolver  # noqa: B018  (imports the resolver while it still can)
    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
        if os.getuid() != entry.pw_uid:  # a worker's parent may have switched already
            os.initgroups(entry.pw_name, entry.pw_gid)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
    except (KeyError, OSError):
        raise InvalidActionError(
            'Could not downgrade to user "%s" - Either this user does not exist or the current '
            'process does not have the permission to switch to it' % (user,)) from None


def exit_now(code):
    """Flush output and end this process at once (never returns into inherited frames)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class ChildProcess:
    """A forked child seen from its parent.

    ``main(fd)`` runs in the child with its end of the link and returns an exit code.
    ``on_message(child, message, respond)`` gets the child's messages; ``on_exit(child)``
    is called once the child has exited and been reaped.

    Attributes: ``kind`` ('worker', 'broker', 'workerCluster'), ``id``, ``app_name`` (the
    child names itself with both: log lines, process title), ``pid``,
    ``channel``, ``respawn`` (this child replaces one that exited), ``ready``,
    ``code`` and ``signal`` (set at exit; ``signal`` a name like ``'SIGKILL'``), ``exited``,
    ``reaped`` (its parent has reported the exit).
    """

    def __init__(self, kind, id_, main, on_message, on_exit, ack_timeout=10000, respawn=False,
                 app_name=None):
        self.kind = kind
        self.id = id_
        self.app_name = app_name
        self.main = main
        self.on_message = on_message
        self.on_exit = on_exit
        self.ack_timeout = ack_timeout
        self.respawn = respawn
        self.pid = None
        self.channel = None
        self.ready = False
        self.code = None
        self.signal = None
        self.exited = False
        self.reaped = False
        self._waiter = None

    def __repr__(self):
        return '<%s %s pid=%s>' % (self.kind, self.id, self.pid)

    def start(self):
        """Fork the child (from the main greenlet only) and start watching it."""
        if greenlet.getcurrent().parent is not None:
            raise RuntimeError('gsc forks only from the main greenlet')
        parent_sock, child_sock = socket.socketpair()
        parent_fd, child_fd = parent_sock.detach(), child_sock.detach()
        pid = gevent.os.fork_and_watch()
        if pid == 0:
            _close_now(parent_fd)
            code = 1
            try:
                reset_after_fork(keep_fds=(child_fd,))
                logs.set_identity(self.kind, self.id, self.app_name)
                code = self.main(child_fd)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception('%s %s failed', self.kind, self.id)
            exit_now(code or 0)
        _close_now(child_fd)
        self.pid = pid
        self.channel = ipc.Channel(parent_fd, self._on_message, ack_timeout=self.ack_timeout,
                                   name='%s %s (pid %d)' % (self.kind, self.id, pid)).start()
        self._waiter = gevent.spawn(self._wait)
        return self

    def kill(self, signum=signal.SIGTERM):
        """Send a signal to the child; False when it is already gone."""
        if self.exited or self.pid is None:
            return False
        try:
            os.kill(self.pid, signal_number(signum))
        except ProcessLookupError:
            return False
        return True

    def send(self, type_, data=None, callback=None, **fields):
        """Send an IPC event to the child (see :meth:`gsc.cluster.ipc.Channel.send`)."""
        self.channel.send(type_, data, callback, **fields)

    def _on_message(self, message, respond):
        self.on_message(self, message, respond)

    def _wait(self):
        _, status = gevent.os.waitpid(self.pid, 0)
        if os.WIFSIGNALED(status):
            self.code, self.signal = None, signal_name(os.WTERMSIG(status))
        else:
            self.code = os.WEXITSTATUS(status)
        self.exited = True
        self.channel.wait_closed(timeout=2.0)
        self.channel.close('%s %s exited' % (self.kind, self.id))
        self.on_exit(self)


class Supervisor:
    """A run loop in the main greenlet (gunicorn's arbiter style).

    Signal handlers and exit watchers only queue work with :meth:`call_in_loop`; the loop
    runs it, so every fork happens in the main greenlet.  ``stop_loop()`` ends the loop.
    """

    def __init__(self):
        self._actions = gevent.queue.Queue()
        self._looping = False
        self._early_crashes = {}

    def respawn(self, child, spawn, *args):
        """Call ``spawn(*args)`` for an exited child: at once if it had become ready, else
        after a delay that doubles with each crash in a row during start-up."""
        key = (child.kind, child.id)
        if child.ready:
            self._early_crashes.pop(key, None)
            spawn(*args)
            return
        crashes = self._early_crashes.get(key, 0)
        self._early_crashes[key] = crashes + 1
        delay = min(MAX_RESPAWN_DELAY, 0.1 * 2 ** crashes)
        log.info('%s %s crashed while starting: respawning in %.1f s', child.kind, child.id, delay)
        gevent.spawn_later(delay, self.call_in_loop, spawn, *args)

    def call_in_loop(self, fn, *args):
        """Run ``fn(*args)`` in the run loop."""
        self._actions.put((fn, args))

    def install_signal(self, signum, handler):
        """Queue ``handler()`` when ``signum`` arrives."""
        return install_signal_handler(signum, self.call_in_loop, handler)

    def run_loop(self):
        """Dispatch queued work until :meth:`stop_loop`; call from the main greenlet."""
        if greenlet.getcurrent().parent is not None:
            raise RuntimeError('the run loop must run in the main greenlet')
        self._looping = True
        while self._looping:
            fn, args = self._actions.get()
            try:
                fn(*args)
            except Exception:
                log.exception('%r failed in the run loop', fn)

    def stop_loop(self):
        """End :meth:`run_loop` after the current action."""
        self._looping = False
        self._actions.put((lambda: None, ()))


class ClusterMember(EventEmitter):
    """What a worker, a broker and the worker cluster share inside their own process.

    The link to the parent, ``send_to_master``, ``error``/``warning`` reporting with an
    origin, ``masterMessage`` delivery (held until the process is ready), graceful
    termination with a hard deadline of ``processTermTimeout`` (SIGALRM, enforced by the
    kernel), and the exit code returned by :meth:`serve`.

    Attributes: ``id``, ``type``, ``options``, ``pid``, ``is_ready``, ``is_terminating``,
    ``channel`` (the link to the parent).
    """

    type: Optional[str] = None
    origin_type: Optional[str] = None
    message_type: Optional[str] = None

    def __init__(self, id_, options, fd):
        EventEmitter.__init__(self)
        self.id = id_
        self.options = options
        self.pid = os.getpid()
        self.is_ready = False
        self.is_terminating = False
        self.channel = ipc.Channel(fd, self.handle_parent_message, self._on_parent_lost,
                                   ack_timeout=options['ipcAckTimeout'],
                                   name='%s %s to its parent' % (self.type, id_))
        self._held = []
        self._exit = gevent.event.AsyncResult()

    @property
    def origin(self):
        """``{type, pid, id}`` of this process, as the master reports it."""
        return {'type': self.origin_type, 'pid': self.pid, 'id': self.id}

    def serve(self):
        """Run this process until it exits; returns the exit code (main greenlet only)."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        install_signal_handler(signal.SIGTERM, self.terminate)
        hub = gevent.get_hub()
        default_handle_error = hub.handle_error

        def handle_error(context, type_, value, tb):
            default_handle_error(context, type_, value, tb)
            if not issubclass(type_, hub.NOT_ERROR) and not issubclass(type_, hub.SYSTEM_ERROR):
                self.on_uncaught(value)
        hub.handle_error = handle_error
        self.channel.start()
        try:
            if self.options.get('downgradeToUser'):
                downgrade_to_user(self.options['downgradeToUser'])
            self.start()
        except Exception as exc:
            self.report('error', exc)
            self.exit(EXIT_BAD_CONTROLLER if getattr(exc, 'name', None) == 'ControllerError'
                      else 1)
        code = self.run_until_exit()
        self.channel.drain()
        return code

    def run_until_exit(self):
        """Block the main greenlet until :meth:`exit`; returns the exit code."""
        return self._exit.get()

    def start(self):
        """Start the process's work (subclasses); then call :meth:`set_ready`."""
        self.set_ready()

    def set_ready(self):
        """Deliver the ``masterMessage`` events held while starting."""
        self.is_ready = True
        held, self._held = self._held, []
        for message, respond in held:
            self.handle_parent_message(message, respond)

    def send_to_master(self, data, callback=None):
        """Send ``data`` to the master; ``callback(err, data)`` gets its answer."""
        self.channel.send(self.message_type, data, callback)

    def report(self, kind, err, capture_stack=True):
        """Send an ``error`` or ``warning`` to the master with this process's origin
        (``capture_stack``: see :func:`gsc.cluster.ipc.wire_error`)."""
        self.channel.send(kind, {'error': ipc.wire_error(err, capture_stack),
                                 'origin': self.origin, 'trace': logs.traceback_to_log(err)})

    def on_uncaught(self, err):
        """An exception nobody caught in a greenlet: reported, then the process exits(1)."""
        self.report('error', err)
        self.exit(1)

    def handle_parent_message(self, message, respond):
        """Dispatch a message of the parent (``masterMessage``, ``terminate``, ...)."""
        kind = message['type']
        if kind == 'terminate':
            self.terminate(bool((message.get('data') or {}).get('immediate')))
        elif kind == 'masterMessage':
            if self.is_ready:
                self.emit('masterMessage', message.get('data'), respond)
            else:
                self._held.append((message, respond))
        elif kind == 'emit':
            self.emit(message.get('event'), message.get('data'))
        elif kind == 'metrics':
            respond(None, metrics.member_figures(self, message.get('data')))

    def terminate(self, immediate=False):
        """Stop: at once when ``immediate``, else close gracefully within processTermTimeout."""
        if immediate:
            self.exit(0)
            return
        if self.is_terminating:
            return
        self.is_terminating = True
        signal.alarm(max(1, int(math.ceil(self.options['processTermTimeout'] / 1000.0))))
        gevent.spawn(self._close_and_exit)

    def close(self):
        """Release what the process serves (subclasses); called once on graceful termination."""

    def exit(self, code=0):
        """End the process with ``code`` (the first call wins)."""
        if not self._exit.ready():
            self._exit.set(code)

    def _close_and_exit(self):
        try:
            self.close()
        finally:
            self.exit(0)

    def _on_parent_lost(self, channel, reason):
        self.terminate()
