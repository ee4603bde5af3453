"""Start a SocketCluster: ``python run.py [-w WORKERS] [-b BROKERS] [-p PORT] ...``.

The design card's entry point, the same command as ``gsc`` and ``python -m gsc`` (see
:mod:`gsc.cli`), run from this checkout: its ``controllers/`` hold the sample, served
on port 8000 when no controller and no WSGI app is named (the chat worker, the broker
controller and the chat page ``chat_app:app``, with history and presence on ``room/*``).

gevent's monkey patching comes first, before any other import: every process of the
cluster is forked from this one and inherits it, so the blocking libraries of a legacy
WSGI app (socket-based database drivers, HTTP clients, ``time.sleep``) yield to the other
greenlets.  ``os`` and ``signal`` stay unpatched: gsc forks, waits and handles signals
with gevent's own APIs, and gevent's ``os.close`` defers the close to the hub, which a
freshly forked child destroys (the link fds it closes would stay open).
"""

from gevent import monkey

monkey.patch_all(os=False, signal=False)

import os  # noqa: E402
import sys  # noqa: E402

from gsc.cli import main  # noqa: E402

SAMPLE_OPTIONS = {
    'workerController': 'worker', 'brokerController': 'broker', 'wsgiApp': 'chat_app:app',
    # the chat's rooms keep their last messages, shown with their positions (the page
    # recovers what it missed across a reconnect), and know who is online
    'channelHistory': {'room/*': {'size': 100, 'publishOffsets': True}},
    'channelPresence': {'room/*': {'userField': 'username'}},
}

if __name__ == '__main__':
    sys.exit(main(app_dir=os.path.dirname(os.path.abspath(__file__)), defaults=SAMPLE_OPTIONS,
                  prog='run.py'))
