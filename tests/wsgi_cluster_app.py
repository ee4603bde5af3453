"""The wsgiApp of tests/test_wsgi_cluster.py: the sample chat app, plus a view that raises
and one that blocks in ``time.sleep`` (cooperative only when run.py monkey-patched)."""

import time

from controllers.chat_app import app as chat_app


def app(environ, start_response):
    """A plain WSGI app in front of the sample's Flask app."""
    path = environ.get('PATH_INFO')
    if path == '/boom':
        raise RuntimeError('the view broke')
    if path == '/sleep':
        time.sleep(1)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'slept']
    return chat_app(environ, start_response)
