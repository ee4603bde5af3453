"""The live cluster dashboard (``dashboard`` option, off unless enabled).

Every worker serves the page at ``dashboardPath`` (its script, styles and the vendored
libraries below it: socketcluster-client 14.3.2 and uPlot 1.6.32, with their licences in
gsc/static/dashboard/).  The page connects with the official browser client and proves
itself over its socket: the ``#gsc/dashboard/login`` event with ``{password}`` (checked
against ``dashboardPassword``) is answered with an auth token ``{gscDashboard: true}``
signed with the authKey; a token the operator signed with the authKey works too (the page
takes it from ``#token=`` or ``?token=`` and sends ``#authenticate``).  Only such a socket
may subscribe to the feed channel ``#gsc/dashboard`` (:mod:`gsc.core.reserved`).

Worker 0 publishes the feed: once a second it asks the master for the cluster's figures
(:func:`gsc.cluster.metrics.master_snapshot`) and :class:`Feed` turns them into one message, with
per-second rates computed from the counters.
"""

import hmac
import html
import logging
import os
import time
from collections import deque

import gevent

from . import metrics
from ..errors import AuthError, InvalidArgumentsError, InvalidOptionsError
from ..core.options import MAX_PASSWORD_LENGTH
from ..core.reserved import DASHBOARD_CHANNEL as CHANNEL
from ..core.reserved import DASHBOARD_CLAIM, is_dashboard_viewer

log = logging.getLogger(__name__)

LOGIN_EVENT = '#gsc/dashboard/login'
PUBLISH_INTERVAL = 1.0
"""Seconds between two messages of the feed."""
MAX_ATTEMPTS = 5
"""Login attempts a socket may make (right or wrong)."""
MAX_FAILURES = 20
"""Wrong passwords a worker accepts per FAILURE_WINDOW from all its sockets together."""
FAILURE_WINDOW = 10.0
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'static', 'dashboard')
PAGE = 'index.html'
ASSETS = {
    'dashboard.js': 'text/javascript; charset=utf-8',
    'dashboard.css': 'text/css; charset=utf-8',
    'socketcluster.min.js': 'text/javascript; charset=utf-8',
    'uPlot.iife.min.js': 'text/javascript; charset=utf-8',
    'uPlot.min.css': 'text/css; charset=utf-8',
}
SECURITY_HEADERS = [
    ('X-Content-Type-Options', 'nosniff'),
    ('X-Frame-Options', 'DENY'),
    ('Referrer-Policy', 'no-referrer'),
    ('Cache-Control', 'no-store'),
]
PAGE_POLICY = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")


def validate_options(options):
    """Check what the registry cannot see alone: ``dashboardPath`` and the pages under it
    differ from ``path``, ``healthPath`` and ``metricsPath``."""
    path = options.get('dashboardPath')
    served = {path}.union('%s/%s' % (path, name) for name in ASSETS)
    for key in ('path', 'healthPath', 'metricsPath'):
        other = options.get(key)
        if isinstance(other, str) and (other in served or other.rstrip('/') == path):
            raise InvalidOptionsError('The dashboardPath option must differ from the %s option'
                                      % key)


# -- sans-I/O cores ---------------------------------------------------------------------

class LoginGuard:
    """Decides the password logins of one worker: at most MAX_ATTEMPTS per socket, and
    MAX_FAILURES wrong passwords per FAILURE_WINDOW for all its sockets together (a token
    signed with the authKey still works meanwhile)."""

    def __init__(self, password):
        self.password = None if password is None else password.encode('utf-8')
        self.failures = deque()

    def refusal(self, attempts, data, now):
        """The error refusing a login (``attempts`` made before on the socket, ``data`` the
        client's ``{password}``), or None: the password is right."""
        if attempts >= MAX_ATTEMPTS:
            return AuthError('Too many dashboard login attempts on this socket - '
                             'reconnect to try again')
        while self.failures and self.failures[0] <= now - FAILURE_WINDOW:
            self.failures.popleft()
        if len(self.failures) >= MAX_FAILURES:
            return AuthError('Too many failed dashboard logins - try again in %d seconds'
                             % FAILURE_WINDOW)
        if self.password is None:
            return AuthError('The dashboard has no password (dashboardPassword) - '
                             'log in with a token signed with the authKey')
        given = data.get('password') if isinstance(data, dict) else None
        if not isinstance(given, str) or len(given) > MAX_PASSWORD_LENGTH:
            return InvalidArgumentsError('The dashboard login expects {"password": string}')
        if not hmac.compare_digest(given.encode('utf-8'), self.password):
            self.failures.append(now)
            return AuthError('Wrong dashboard password')
        return None


class Feed:
    """Turns successive cluster snapshots (:meth:`gsc.cluster.metrics.MasterMetrics.snapshot`)
    into the dashboard's messages, with per-second rates from the counters (None for a
    process first seen, or respawned, since the last snapshot)."""

    def __init__(self, instance_id=None, app_name=None):
        self.instance_id = instance_id
        self.app_name = app_name
        self._last = {}  # (kind, id) -> (pid, seconds, {counter: value})

    def message(self, snapshot, now, wall_time):
        """The feed's message for ``snapshot`` (None: the master did not answer) taken at
        ``now`` (monotonic seconds) and ``wall_time`` (epoch seconds).  It names its
        ``instance`` (instanceId): on Redis, the instances of an app share the feed."""
        message = {'time': int(wall_time * 1000), 'instance': self.instance_id,
                   'appName': self.app_name}
        if snapshot is None:
            message['error'] = 'the master did not answer'
            return message
        worker_restarts = dict(snapshot['workerRestarts'])
        broker_restarts = dict(snapshot['brokerRestarts'])
        message.update(
            workerCluster=snapshot['workerCluster'],
            workers=[self._worker(w, worker_restarts.get(w['id'], 0), now)
                     for w in snapshot['workers']],
            brokers=[self._broker(b, broker_restarts.get(b['id'], 0), now)
                     for b in snapshot['brokers']],
            redis=redis_status(snapshot['workers']))
        return message

    def _worker(self, worker, restarts, now):
        shown = {'id': worker['id'], 'state': worker['state'], 'restarts': restarts}
        if worker['state'] != 'up' or 'handshakes' not in worker:
            return shown
        rates = self._rates(('worker', worker['id']), worker, now,
                            ('messagesReceived', 'messagesSent'))
        shown.update(pid=worker['pid'], connections=worker['connections'],
                     clients=worker['clients'], subscriptions=worker['subscriptions'],
                     rss=worker['rss'], inPerSec=rates['messagesReceived'],
                     outPerSec=rates['messagesSent'])
        return shown

    def _broker(self, broker, restarts, now):
        shown = {'id': broker['id'], 'state': broker['state'], 'restarts': restarts}
        if broker['state'] != 'up':
            return shown
        rates = self._rates(('broker', broker['id']), broker, now, ('publishes',))
        shown.update(pid=broker['pid'], channels=broker['channels'], keys=broker['keys'],
                     workerLinks=broker['connections'], rss=broker['rss'],
                     publishesPerSec=rates['publishes'])
        return shown

    def _rates(self, key, figures, now, counters):
        """``{counter: per second since the last snapshot}`` of one process."""
        last = self._last.get(key)
        self._last[key] = (figures['pid'], now, {name: figures[name] for name in counters})
        if last is None or last[0] != figures['pid'] or now <= last[1]:
            return dict.fromkeys(counters)
        elapsed = now - last[1]
        return {name: round(max(0, figures[name] - last[2][name]) / elapsed, 1)
                for name in counters}


def redis_status(workers):
    """``{'up': n, 'of': m}``: how many of the workers' Redis links are up; None when the
    cluster does not use Redis."""
    links = [up for worker in workers if worker['state'] == 'up'
             for name, up, *_rest in worker.get('links', ()) if name == 'redis']
    return {'up': sum(1 for up in links if up), 'of': len(links)} if links else None


# -- the HTTP side ----------------------------------------------------------------------

def read_static(name):
    """The bytes of ``name`` in gsc/static/dashboard/."""
    with open(os.path.join(STATIC_DIR, name), 'rb') as f:
        return f.read()


def render_page(options):
    """The page, with its base path and the realtime path filled in."""
    text = read_static(PAGE).decode('utf-8')
    for field, value in (('base', options['dashboardPath']), ('socketPath', options['path'])):
        text = text.replace('{{%s}}' % field, html.escape(value, quote=True))
    return text.encode('utf-8')


def routes(options):
    """``{path: handler}`` of the page and its assets (read once, at the worker's start)."""
    base = options['dashboardPath']
    page = ('200 OK', [('Content-Type', 'text/html; charset=utf-8'),
                       ('Content-Security-Policy', PAGE_POLICY)] + SECURITY_HEADERS,
            render_page(options))
    table = {base: lambda: page}
    for name, content_type in ASSETS.items():
        answer = ('200 OK', [('Content-Type', content_type)] + SECURITY_HEADERS, read_static(name))
        table['%s/%s' % (base, name)] = lambda answer=answer: answer
    return table


# -- the worker's part ------------------------------------------------------------------

def attach(worker):
    """Serve the dashboard from ``worker`` when the ``dashboard`` option is on: the page's
    routes, the login event on every socket, and (worker 0, once ready) the feed."""
    options = worker.options
    if not options.get('dashboard'):
        return
    worker.http_server.routes.update(routes(options))
    guard = LoginGuard(options.get('dashboardPassword'))
    server = worker.sc_server
    server.on('connection', lambda socket, *_status: accept_logins(socket, guard))
    server.on('authentication', lambda socket, _token: drop_lapsed_viewer(socket))
    server.on('deauthentication', lambda socket, _token: drop_lapsed_viewer(socket))
    if worker.is_leader:
        feed = Feed(options.get('instanceId'), options.get('appName'))
        worker.on('ready', lambda: gevent.spawn(publish_forever, worker, feed))


def accept_logins(socket, guard):
    """Answer ``#gsc/dashboard/login`` on ``socket``: a dashboard token, or the refusal."""
    attempts = [0]

    def login(data, respond):
        refusal = guard.refusal(attempts[0], data, time.monotonic())
        attempts[0] += 1
        if refusal is not None:
            respond(refusal)
            return
        socket.set_auth_token({DASHBOARD_CLAIM: True})
        respond()
    socket.on(LOGIN_EVENT, login)


def drop_lapsed_viewer(socket):
    """Kick ``socket`` out of the feed when its token no longer grants the dashboard."""
    if socket.is_subscribed(CHANNEL) and not is_dashboard_viewer(socket):
        socket.kick_out(CHANNEL, 'The dashboard token was removed or replaced')


def publish_forever(worker, feed):
    """Publish the feed to ``#gsc/dashboard`` every PUBLISH_INTERVAL until the worker
    terminates."""
    while not worker.is_terminating:
        started = time.monotonic()
        try:
            snapshot = metrics.master_snapshot(worker, False)
            message = feed.message(snapshot, time.monotonic(), time.time())
            worker.exchange.publish(CHANNEL, message, log_publish_failure)
        except Exception:  # the feed is for the operator: its failure must not cost the worker
            log.exception('The dashboard feed failed')
        gevent.sleep(max(0.1, PUBLISH_INTERVAL - (time.monotonic() - started)))


def log_publish_failure(err):
    """The callback of a feed publication: a failure is logged (the next one may pass)."""
    if err:
        log.warning('The dashboard feed could not be published: %s', err)
