"""Start a SocketCluster: ``python run.py [-w WORKERS] [-b BROKERS] [-p PORT] ...``.

Options come, by increasing priority, from the defaults, the ``SOCKETCLUSTER_*``
environment variables, the command line, then the JSON object ``SOCKETCLUSTER_OPTIONS``
(any option of the master, custom keys included).  With no flags, the sample controllers
of ``controllers/`` and the sample chat page (``wsgiApp`` 'chat_app:app') are served on
port 8000.

gevent's monkey patching comes first, before any other import: every process of the
cluster is forked from this one and inherits it, so the blocking libraries of a legacy
WSGI app (socket-based database drivers, HTTP clients, ``time.sleep``) yield to the other
greenlets.  ``os`` and ``signal`` stay unpatched: gsc forks, waits and handles signals
with gevent's own APIs, and gevent's ``os.close`` defers the close to the hub, which a
freshly forked child destroys (the link fds it closes would stay open).
"""

from gevent import monkey

monkey.patch_all(os=False, signal=False)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from gsc import SocketCluster  # noqa: E402

ENVIRONMENT = (
    # (option, variable, type, flags, help)
    ('workers', 'SOCKETCLUSTER_WORKERS', int, ('-w', '--workers'), 'number of worker processes'),
    ('brokers', 'SOCKETCLUSTER_BROKERS', int, ('-b', '--brokers'), 'number of broker processes'),
    ('port', 'SOCKETCLUSTER_PORT', int, ('-p', '--port'), 'TCP port the workers listen on'),
    ('host', 'SOCKETCLUSTER_HOST', str, ('--host',), 'address the workers bind'),
    ('appName', 'SOCKETCLUSTER_APP_NAME', str, ('-n', '--app-name'), 'application name'),
    ('workerController', 'SOCKETCLUSTER_WORKER_CONTROLLER', str, ('--wc',),
     'worker controller: a name in controllers/ or a dotted module name'),
    ('brokerController', 'SOCKETCLUSTER_BROKER_CONTROLLER', str, ('--bc',),
     'broker controller: a name in controllers/ or a dotted module name'),
    ('workerClusterController', 'SOCKETCLUSTER_WORKERCLUSTER_CONTROLLER', str, ('--wcc',),
     'worker cluster controller: a name in controllers/ or a dotted module name'),
    ('wsgiApp', 'SOCKETCLUSTER_WSGI_APP', str, ('--app',),
     "WSGI app served beside the realtime path: 'module:attr', the module in controllers/ "
     "or a dotted name"),
    ('environment', 'ENV', str, ('-e', '--environment'), "'dev' (hot reboot) or 'prod'"),
    ('logLevel', 'SOCKETCLUSTER_LOG_LEVEL', int, ('--log-level',), '0 silent, 1 errors, 2 all'),
    ('socketChannelLimit', 'SOCKETCLUSTER_SOCKET_CHANNEL_LIMIT', int, ('--channel-limit',),
     'channels a socket may subscribe to'),
    ('path', 'SOCKETCLUSTER_PATH', str, ('--path',), 'URL path of the WebSocket endpoint'),
)
SAMPLE_OPTIONS = {'workerController': 'worker', 'brokerController': 'broker',
                  'wsgiApp': 'chat_app:app'}


def parse_args(argv=None):
    """The command-line flags (their help names the environment variable of each)."""
    parser = argparse.ArgumentParser(
        description='Start a SocketCluster (gsc).',
        epilog='SOCKETCLUSTER_OPTIONS: a JSON object of options applied last, e.g. '
               '\'{"pingInterval": 5000, "myKey": 1}\'.')
    for option, variable, type_, flags, text in ENVIRONMENT:
        parser.add_argument(*flags, dest=option, type=type_, default=None,
                            help='%s (env %s)' % (text, variable))
    return parser.parse_args(argv)


def build_options(args, environ=os.environ):
    """Options from the samples, ``SOCKETCLUSTER_*`` variables, flags and SOCKETCLUSTER_OPTIONS."""
    options = dict(SAMPLE_OPTIONS)
    for option, variable, type_, _flags, _text in ENVIRONMENT:
        if environ.get(variable):
            try:
                options[option] = type_(environ[variable])
            except ValueError:
                raise SystemExit('%s must be a number, not %r' % (variable, environ[variable]))
        if getattr(args, option) is not None:
            options[option] = getattr(args, option)
    if environ.get('SOCKETCLUSTER_OPTIONS'):
        try:
            extra = json.loads(environ['SOCKETCLUSTER_OPTIONS'])
        except ValueError as exc:
            raise SystemExit('SOCKETCLUSTER_OPTIONS is not valid JSON: %s' % exc)
        if not isinstance(extra, dict):
            raise SystemExit('SOCKETCLUSTER_OPTIONS must be a JSON object')
        options.update(extra)
    return options


def main(argv=None):
    """Run the master until SIGTERM or SIGINT; exit code 1 when the options are invalid."""
    logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)
    options = build_options(parse_args(argv))
    socket_cluster = SocketCluster(options)
    return 0 if socket_cluster.serve_forever() else 1


if __name__ == '__main__':
    sys.exit(main())
