"""Logging and identity of the processes of a tree: one line per event, in every process.

    2026-11-29T13:45:01.123Z WARNING worker 0 (pid 4242): Could not connect to broker 0 ...

Each process names itself once (:func:`set_identity`: ``master``, ``broker 1``,
``workercluster``, ``worker 0``), which also sets its title in ``ps`` and ``top``
(``gsc worker 0 <appName>``).  :func:`configure` installs the handler on the root logger
unless the application configured logging itself, and maps ``logLevel`` onto levels for
gsc's loggers and the chatty third-party ones.  Colour only on a terminal, never with
``NO_COLOR``.  Tracebacks are for exceptions of user code and gsc bugs:
:func:`traceback_to_log` says which one an error deserves.
"""

import logging
import os
import sys
import time
import traceback

from setproctitle import setproctitle

from .errors import SCError

LEVELS = {0: logging.CRITICAL + 10, 1: logging.ERROR, 2: logging.INFO, 3: logging.DEBUG}
"""``logLevel`` (0 silent, 1 errors, 2 notices and warnings, 3 everything) -> logging level."""
THIRD_PARTY = ('websockets', 'gevent', 'geventwebsocket', 'redis', 'urllib3')
"""Loggers of libraries that speak per connection: warnings at most, whatever the logLevel."""
KIND_NAMES = {'workerCluster': 'workercluster', 'WorkerCluster': 'workercluster'}
COLOURS = {'ERROR': 31, 'CRITICAL': 31, 'WARNING': 33, 'INFO': 32, 'DEBUG': 36}

_identity = {'name': 'master'}


def process_name(kind, id_=None):
    """``worker 0``, ``broker 1``, ``workercluster``, ``master``."""
    name = KIND_NAMES.get(kind, str(kind).lower())
    return name if id_ is None else '%s %s' % (name, id_)


def set_identity(kind, id_=None, app_name=None):
    """Name this process in its log lines and its title (``gsc <name> <appName>``)."""
    _identity['name'] = process_name(kind, id_)
    setproctitle(' '.join(part for part in ('gsc', _identity['name'], app_name) if part))


def colour_enabled(stream=None):
    """True when ``stream`` (stdout) is a terminal and ``NO_COLOR`` is not set."""
    stream = stream or sys.stdout
    return not os.environ.get('NO_COLOR') and hasattr(stream, 'isatty') and stream.isatty()


def paint(text, colour, enabled=None):
    """``text`` in ANSI ``colour`` (an SGR number) when colour is enabled."""
    if not colour or not (colour_enabled() if enabled is None else enabled):
        return text
    return '\033[%sm%s\033[0m' % (colour, text)


class Formatter(logging.Formatter):
    """``<ISO-8601 UTC time> <LEVEL> <origin>: <message>``; the origin is this process
    (``worker 0 (pid 42)``) unless the record carries another (``extra={'origin': ...}``,
    a report relayed from a child); messages of other libraries name their logger."""

    def __init__(self, colour=False):
        super().__init__()
        self.colour = colour

    def formatTime(self, record, datefmt=None):
        return '%s.%03dZ' % (time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created)),
                             record.msecs)

    def format(self, record):
        origin = getattr(record, 'origin', None) or '%s (pid %d)' % (_identity['name'],
                                                                     record.process)
        message = record.getMessage()
        if not record.name.startswith('gsc'):
            message = '[%s] %s' % (record.name, message)
        level = paint(record.levelname, COLOURS.get(record.levelname), self.colour)
        line = '%s %s %s: %s' % (self.formatTime(record), level, origin, message)
        if record.exc_info:
            line += '\n' + self.formatException(record.exc_info).rstrip()
        elif record.stack_info:
            line += '\n' + record.stack_info.rstrip()
        return line


class Handler(logging.StreamHandler):
    """gsc's handler of the root logger (to stdout)."""


def configure(log_level, stream=None):
    """Apply ``logLevel``: gsc's handler on the root logger when the application installed
    none (or only gsc's), and the levels of gsc's and the third-party loggers."""
    level = LEVELS.get(log_level, logging.INFO)
    root = logging.getLogger()
    own = [h for h in root.handlers if isinstance(h, Handler)]
    if len(own) == len(root.handlers):
        stream = stream or sys.stdout
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace', line_buffering=True)
        for handler in own:
            root.removeHandler(handler)
        handler = Handler(stream)
        handler.setFormatter(Formatter(colour_enabled(stream)))
        root.addHandler(handler)
        root.setLevel(level)
    logging.getLogger('gsc').setLevel(level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def traceback_to_log(err):
    """The traceback worth logging with ``err``, or None.

    gsc's own errors say all in their message (a controller that cannot be imported, a bad
    option, a client's bad input); one that wraps an exception raised by user code (a
    controller failing while it is imported) shows that exception's traceback; any other
    exception is a bug in user code or in gsc and shows its own.
    """
    if not isinstance(err, BaseException):
        return None
    if isinstance(err, SCError):
        cause = err.__cause__
        if cause is None or isinstance(cause, (ImportError, SyntaxError, SCError)):
            return None
        err = cause
    if err.__traceback__ is None:
        return None
    return ''.join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()
