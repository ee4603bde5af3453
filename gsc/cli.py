"""The command line: ``gsc [flags]``, ``python -m gsc [flags]``, ``python run.py [flags]``,
and ``gsc new DIR``.

Options come, by increasing priority, from the project's conventional controllers, the
``SOCKETCLUSTER_*`` environment variables, the command line, then the JSON object
``SOCKETCLUSTER_OPTIONS`` (any option of the master, custom keys included).  The
conventional controllers apply only when no controller and no WSGI app is named anywhere:
then ``controllers/worker.py``, ``controllers/broker.py`` and the WSGI app of the project
are used when they exist.

The caller applies gevent's monkey patching before importing this module (see run.py and
gsc/__main__.py): every process of the cluster is forked from this one and inherits it.
"""

import argparse
import json
import logging
import os
import sys

from .core.options import with_flags

NAMING_OPTIONS = ('workerController', 'brokerController', 'workerClusterController', 'wsgiApp')
PROJECT_CONTROLLERS = {'workerController': 'worker', 'brokerController': 'broker',
                       'wsgiApp': 'app:app'}
"""The controllers of a project made by ``gsc new``, used when nothing is named."""


def parse_args(argv=None, prog=None):
    """The command-line flags (their help names the environment variable of each)."""
    parser = argparse.ArgumentParser(
        prog=prog, description='Start a SocketCluster (gsc). `gsc new DIR` creates a project.',
        epilog='SOCKETCLUSTER_OPTIONS: a JSON object of options applied last, e.g. '
               '\'{"pingInterval": 5000, "myKey": 1}\'.')
    for option in with_flags():
        text = '%s (env %s)' % (option.doc.replace('`', ''), ' or '.join(option.env))
        parser.add_argument(*option.flags, dest=option.name, type=option.cli_type, default=None,
                            help=text)
    return parser.parse_args(argv)


def present_controllers(defaults, app_dir):
    """The naming entries of ``defaults`` whose module exists in ``app_dir``/controllers/."""
    found = {}
    for option, name in defaults.items():
        module = name.partition(':')[0] if option in NAMING_OPTIONS else None
        if module and os.path.isfile(os.path.join(app_dir, 'controllers', module + '.py')):
            found[option] = name
    return found


def build_options(args, app_dir, defaults=None, environ=os.environ):
    """Options from the ``SOCKETCLUSTER_*`` variables, flags and SOCKETCLUSTER_OPTIONS; the
    ``defaults`` controllers found in ``app_dir`` when none is named, with the other options
    of ``defaults`` (the sample's) where they are not set."""
    options = {'paths': {'appDirPath': app_dir}}
    for option in with_flags():
        variable = next((v for v in option.env if environ.get(v)), None)
        if variable is not None:
            try:
                options[option.name] = option.cli_type(environ[variable])
            except ValueError:
                raise SystemExit('%s must be a number, not %r' % (variable, environ[variable]))
        if getattr(args, option.name) is not None:
            options[option.name] = getattr(args, option.name)
    if environ.get('SOCKETCLUSTER_OPTIONS'):
        try:
            extra = json.loads(environ['SOCKETCLUSTER_OPTIONS'])
        except ValueError as exc:
            raise SystemExit('SOCKETCLUSTER_OPTIONS is not valid JSON: %s' % exc)
        if not isinstance(extra, dict):
            raise SystemExit('SOCKETCLUSTER_OPTIONS must be a JSON object')
        options.update(extra)
    if not any(options.get(key) or options.get(_snake(key)) for key in NAMING_OPTIONS):
        defaults = PROJECT_CONTROLLERS if defaults is None else defaults
        options.update(present_controllers(defaults, app_dir))
        for key, value in defaults.items():
            if key not in NAMING_OPTIONS:
                options.setdefault(key, value)
    return options


def _snake(key):
    return ''.join('_' + c.lower() if c.isupper() else c for c in key)


def main(argv=None, app_dir=None, defaults=None, prog=None):
    """Run the master until SIGTERM or SIGINT (exit code 1 when the options are invalid), or
    ``new DIR``.  ``app_dir`` holds controllers/ (default: the current directory)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['new']:
        from .scaffold import main as new_project
        logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)
        return new_project(argv[1:], prog='%s new' % (prog or 'gsc'))
    app_dir = os.path.abspath(app_dir or os.getcwd())
    options = build_options(parse_args(argv, prog), app_dir, defaults)
    from .cluster.master import SocketCluster
    return 0 if SocketCluster(options).serve_forever() else 1
