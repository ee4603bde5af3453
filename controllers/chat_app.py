"""The sample WSGI app, served by every worker beside the realtime path.

``python run.py`` names it with ``wsgiApp: 'chat_app:app'`` (``--app`` on the command
line): a plain Flask app, as a legacy app would be.  It serves the chat page
(``static/index.html`` and ``static/chat.js``, which load the official
socketcluster-client bundle ``static/socketcluster.min.js``) and a view that publishes to
a room from plain HTTP, through the worker's exchange (``environ['gsc.exchange']``):

    curl -H 'Content-Type: application/json' -d '{"text": "hello"}' \\
         http://localhost:8000/rooms/lobby/messages
"""

import os

from flask import Flask, abort, request

app = Flask(__name__)  # static files: controllers/static/, served at /static/


@app.get('/')
def index():
    """The chat page."""
    return app.send_static_file('index.html')


@app.post('/rooms/<room>/messages')
def post_message(room):
    """Publish ``{"text": ...}`` to ``room/<room>`` from ``http``; every worker delivers it."""
    text = (request.get_json(silent=True) or {}).get('text')
    if not isinstance(text, str) or not text:
        abort(400, 'The body is {"text": "..."}')
    request.environ['gsc.exchange'].publish('room/' + room, {'from': 'http', 'text': text})
    return {'published': True, 'pid': os.getpid()}
