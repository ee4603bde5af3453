"""``gsc new DIR``: a new project, in the spirit of ``socketcluster create``.

It writes ``controllers/worker.py`` (an rpc and a channel), ``controllers/broker.py``,
``controllers/app.py`` (a WSGI app on the same port), ``requirements.txt`` (gsc, from where
this gsc was installed) and a README of two commands.  An existing non-empty directory
is left alone.
"""

import argparse
import json
import logging
import os
from importlib import metadata

log = logging.getLogger(__name__)

WORKER = '''"""The worker controller: every worker process runs run(worker) before it listens."""

import logging

log = logging.getLogger(__name__)


def run(worker):
    def on_connection(socket, status):
        def echo(data, respond):                    # client: socket.emit('echo', data, cb)
            respond(None, data)

        socket.on('echo', echo)

    worker.sc_server.on('connection', on_connection)
    log.info('worker %d is up', worker.id)
'''

BROKER = '''"""The broker controller: every broker process runs run(broker)."""

import logging

log = logging.getLogger(__name__)


def run(broker):
    log.info('broker %d is up', broker.id)
'''

APP = '''"""The WSGI app served beside the realtime path (any WSGI app: Flask, Django, ...)."""


def app(environ, start_response):
    if environ['PATH_INFO'] == '/publish' and environ['REQUEST_METHOD'] == 'POST':
        environ['gsc.exchange'].publish('news', {'text': 'published from a view'})
    body = b'gsc is running: connect a socketcluster-client to /socketcluster/\\n'
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
'''

README = '''# {name}

A realtime server on gsc, SocketCluster for Python.

Install and run it (then connect a socketcluster-client 14.x to ws://127.0.0.1:8000/socketcluster/):

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/gsc

Run it with 2 workers in production:

    .venv/bin/gsc -w 2 -e prod

`controllers/worker.py` is the worker controller, `controllers/broker.py` the broker
controller and `controllers/app.py` the WSGI app on the same port. `gsc --help` lists the flags.
'''


def requirement():
    """The requirement line of this gsc: its install source when pip recorded one."""
    try:
        dist = metadata.distribution('gsc')
    except metadata.PackageNotFoundError:
        return 'gsc'
    direct = dist.read_text('direct_url.json')
    if direct:
        url = json.loads(direct).get('url')
        if url:
            return 'gsc @ %s' % url
    return 'gsc==%s' % dist.version


def files(name):
    """The project's files: path -> text."""
    return {
        os.path.join('controllers', 'worker.py'): WORKER,
        os.path.join('controllers', 'broker.py'): BROKER,
        os.path.join('controllers', 'app.py'): APP,
        'requirements.txt': requirement() + '\n',
        'README.md': README.format(name=name),
    }


def create(directory):
    """Write a new project into ``directory`` (created); ValueError if it is not empty."""
    if os.path.isdir(directory) and os.listdir(directory):
        raise ValueError('%s exists and is not empty' % directory)
    name = os.path.basename(os.path.abspath(directory))
    for path, text in files(name).items():
        target = os.path.join(directory, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'w', encoding='utf-8') as f:
            f.write(text)
    return sorted(files(name))


def main(argv, prog='gsc new'):
    """``gsc new DIR``: exit code 0, or 1 with one line naming the problem."""
    parser = argparse.ArgumentParser(prog=prog, description='Create a gsc project in DIR.')
    parser.add_argument('directory', metavar='DIR')
    args = parser.parse_args(argv)
    try:
        written = create(args.directory)
    except (ValueError, OSError) as exc:
        log.error('gsc new: %s', exc)
        return 1
    log.info('Created %s: %s', args.directory, ', '.join(written))
    log.info('Next: cd %s && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt '
             '&& .venv/bin/gsc', args.directory)
    return 0
