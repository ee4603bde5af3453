"""Health and metrics of a whole cluster: ``healthPath`` (for load balancers and probes)
and ``metricsPath`` (Prometheus' text format, made by the official ``prometheus_client``).

Each worker keeps plain int counters on its SCServer (incremented where the events happen,
no lock and no allocation); gauges (connections, subscriptions, bytes buffered) are read
when asked.  A request on either path is answered from one snapshot of the cluster that
the master gathers on demand over the existing IPC links: the worker cluster asks every
worker, the master asks every broker, each with a short timeout, and the master adds what
only it knows (restarts).  A worker serving the request on the public port asks the master
for that snapshot; with ``metricsPort`` the master serves both paths on its own listener
(then nothing of this is on the public port).

Per-worker series carry a ``worker`` label (and ``broker`` for the links); there are no
cluster-total series: ``sum()`` over the label gives them, without double counting.
"""

import gevent
from gevent.event import AsyncResult
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..core import codec
from ..errors import InvalidActionError, InvalidOptionsError
from ..server.http import HTTPServer
from .memory import resident_bytes

WORKER_TIMEOUT = 1000
"""ms the worker cluster waits for each worker's figures."""
CHILD_TIMEOUT = 1500
"""ms the master waits for each broker's figures and for the worker cluster's."""
CLUSTER_TIMEOUT = 2500
"""ms a worker waits for the master's snapshot (past the two timeouts above)."""
JSON = [('Content-Type', 'application/json')]
PROMETHEUS = [('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')]

WORKER_COUNTERS = (
    ('handshakes', 'gsc_handshakes', 'Socket handshakes completed'),
    ('messagesReceived', 'gsc_messages_received', 'WebSocket messages received from clients'),
    ('messagesSent', 'gsc_messages_sent', 'WebSocket messages sent to clients'),
    ('publishes', 'gsc_publishes', 'Publications handed to the broker engine (clients and server code)'),
    ('subscribes', 'gsc_subscribes', 'Channel subscriptions of sockets accepted'),
    ('ackTimeouts', 'gsc_ack_timeouts',
     'Server emits whose client answer did not come within ackTimeout'),
    ('slowConsumerCloses', 'gsc_slow_consumer_closes',
     'Sockets closed (1013) because their outbound backlog passed maxOutboundBytes'),
)
WORKER_GAUGES = (
    ('connections', 'gsc_connections', 'Open WebSocket connections (handshaken or not)'),
    ('clients', 'gsc_clients', 'Sockets that completed the handshake'),
    ('subscriptions', 'gsc_subscriptions', 'Channel subscriptions of the sockets'),
    ('outboundBytes', 'gsc_outbound_buffered_bytes',
     'Bytes written to sockets but not yet taken by the kernel'),
    ('rss', 'gsc_worker_resident_memory_bytes', 'Resident memory of the worker process'),
)
BROKER_FIGURES = (
    ('channels', GaugeMetricFamily, 'gsc_broker_channels', 'Channels with a subscriber'),
    ('keys', GaugeMetricFamily, 'gsc_broker_keys', 'Top-level keys of the key/value store'),
    ('publishes', CounterMetricFamily, 'gsc_broker_publishes', 'Publications relayed'),
    ('rss', GaugeMetricFamily, 'gsc_broker_resident_memory_bytes',
     'Resident memory of the broker process'),
)


def validate_options(options):
    """Check what the registry cannot see alone: ``healthPath`` and ``metricsPath`` differ from
    ``path`` and from each other, ``metricsPort`` from ``port``."""
    for key in ('healthPath', 'metricsPath'):
        value = options.get(key)
        if value is not None and value == options.get('path'):
            raise InvalidOptionsError('The %s option must differ from the path option' % key)
    if options.get('healthPath') is not None and options['healthPath'] == options.get('metricsPath'):
        raise InvalidOptionsError('The healthPath and metricsPath options must differ')
    if options.get('metricsPort') is not None and options['metricsPort'] == options.get('port'):
        raise InvalidOptionsError('The metricsPort option must be a port other than the port option')


# -- in a worker -------------------------------------------------------------------------

def engine_links(server):
    """``[[name, up, losses(, reason)], ...]``: the links of a worker's pub/sub engine
    ('broker N', 'redis', 'redis <primary>'), whether each is up, how often it was lost, and
    (the Redis engine's) why it is down."""
    states = getattr(server.exchange.engine, 'link_states', None)
    return [list(state) for state in states()] if states is not None else []


def worker_figures(worker, brief):
    """What a worker reports: listening and its engine links; unless ``brief``, its
    counters and gauges too."""
    server = worker.sc_server
    http_server = worker.http_server
    figures = {'id': worker.id, 'pid': worker.pid,
               'listening': bool(http_server is not None and http_server.started
                                 and not worker.is_terminating),
               'links': engine_links(server) if server is not None else []}
    if brief or server is None:
        return figures
    sockets = list(server.clients.values()) + list(server.pending_clients.values())
    figures.update(
        handshakes=server.handshakes, messagesReceived=server.messages_received,
        messagesSent=server.messages_sent, publishes=server.publishes,
        subscribes=server.subscribes, ackTimeouts=server.ack_timeouts,
        slowConsumerCloses=server.slow_consumer_closes, connections=server.ws_connections,
        clients=server.clients_count,
        subscriptions=sum(len(socket.channel_subscriptions) for socket in sockets),
        outboundBytes=sum(socket.socket.buffered_amount for socket in sockets),
        rss=resident_bytes())
    return figures


def member_figures(member, request):
    """The answer of a worker or a broker to the ``metrics`` request of its parent."""
    if member.type == 'worker':
        return worker_figures(member, bool((request or {}).get('brief')))
    server = member.server
    return {'id': member.id, 'pid': member.pid, 'connections': len(server.connections),
            'channels': server.channel_count, 'keys': len(server.data_map),
            'publishes': server.publishes, 'rss': resident_bytes()}


def worker_routes(worker):
    """``{path: handler}`` for the worker's HTTP server (none when ``metricsPort`` moves them
    to the master); each handler answers from the master's snapshot."""
    options = worker.options
    if options.get('metricsPort') is not None:
        return {}
    return routes(options, lambda brief: master_snapshot(worker, brief))


def master_snapshot(worker, brief):
    """The cluster's figures (:meth:`MasterMetrics.snapshot`) asked of the master by a worker
    (blocks the calling greenlet); None when the master did not answer."""
    result = AsyncResult()
    worker.channel.send('metrics', {'brief': brief}, lambda err, data: result.set(
        None if err else data), timeout=CLUSTER_TIMEOUT)
    return result.get()


def routes(options, snapshot):
    """``{path: handler}`` of the enabled paths; ``snapshot(brief)`` gives the cluster's
    figures (None when the master did not answer)."""
    table = {}
    if options.get('healthPath'):
        table[options['healthPath']] = lambda: render_health(snapshot(True))
    if options.get('metricsPath'):
        table[options['metricsPath']] = lambda: render_metrics(snapshot(False))
    return table


# -- in the worker cluster -------------------------------------------------------------------

def gather_workers(cluster, request, respond):
    """Answer the master with every worker slot: its figures, or ``state`` 'down' (no
    process) or 'silent' (no answer within WORKER_TIMEOUT)."""
    asks = {}
    for worker_id in range(cluster.options['workers']):
        child = cluster.workers.get(worker_id)
        if child is not None and not child.exited:
            asks[worker_id] = child.channel
    gather(asks, request, WORKER_TIMEOUT, lambda answers: respond(None, [
        slot(worker_id, answers.get(worker_id), worker_id in asks)
        for worker_id in range(cluster.options['workers'])]))


def slot(id_, answer, alive):
    """One process in a snapshot: its figures with ``state`` 'up', or 'down' / 'silent'."""
    if answer is not None:
        return dict(answer, state='up')
    return {'id': id_, 'state': 'silent' if alive else 'down'}


def gather(channels, request, timeout, done):
    """Send ``metrics`` to every channel of ``{key: channel}``; ``done({key: answer or None})``
    once each answered, failed or timed out."""
    answers = {}
    pending = [len(channels)]

    def answered(key, err, data):
        answers[key] = None if err else data
        pending[0] -= 1
        if pending[0] == 0:
            done(answers)
    if not channels:
        done(answers)
        return
    for key, channel in channels.items():
        channel.send('metrics', request, lambda err, data, key=key: answered(key, err, data),
                     timeout=timeout)


# -- in the master ------------------------------------------------------------------------

class MasterMetrics:
    """The master's part: restart counts, the cluster snapshot, and the ``metricsPort``
    listener when one is set."""

    def __init__(self, master):
        self.master = master
        self.worker_restarts = {}
        self.broker_restarts = {}
        self.http_server = None
        master.on('workerStart', lambda data: self._count_start(self.worker_restarts, data))
        master.on('brokerStart', lambda data: self._count_start(self.broker_restarts, data))

    @staticmethod
    def _count_start(restarts, data):
        if data.get('respawn'):
            restarts[data['id']] = restarts.get(data['id'], 0) + 1

    def listen(self):
        """Serve both paths on ``metricsPort`` (when set); InvalidActionError when it is taken.

        The listener is inherited, idle, by the children forked later; they die with the master.
        """
        options = self.master.options
        port = options.get('metricsPort')
        if port is None:
            return
        host = options.get('host') or '0.0.0.0'
        try:
            self.http_server = HTTPServer((host, port), not_found)
            self.http_server.routes = routes(options, self.snapshot)
            self.http_server.start()
        except OSError as exc:
            self.http_server = None
            raise InvalidActionError('Cannot listen on metricsPort %d - %s'
                                     % (port, exc.strerror or exc)) from None

    def close(self):
        """Stop the ``metricsPort`` listener."""
        if self.http_server is not None:
            self.http_server.stop(timeout=1)
            self.http_server = None

    def answer(self, request, respond):
        """Answer a worker's ``metrics`` request with the snapshot (in a greenlet of its own)."""
        brief = bool((request or {}).get('brief'))
        gevent.spawn(lambda: respond(None, self.snapshot(brief)))

    def snapshot(self, brief):
        """The whole cluster's figures: ``workers`` and ``brokers`` (one slot per id),
        ``workerCluster`` ('up', 'down' or 'silent') and the restart counts."""
        master = self.master
        channels = {}
        cluster = master.worker_cluster
        if cluster is not None and not cluster.exited:
            channels['cluster'] = cluster.channel
        for broker_id, child in master.brokers.items():
            if not child.exited:
                channels[broker_id] = child.channel
        result = AsyncResult()
        gather(channels, {'brief': brief}, CHILD_TIMEOUT, result.set)
        answers = result.get()
        workers = answers.get('cluster')
        cluster_state = 'up' if workers is not None else ('silent' if 'cluster' in channels else 'down')
        if workers is None:
            workers = [{'id': i, 'state': cluster_state} for i in range(master.options['workers'])]
        return {'workerCluster': cluster_state, 'workers': workers,
                'brokers': [slot(i, answers.get(i), i in channels)
                            for i in range(master.options['brokers'])],
                'workerRestarts': sorted(self.worker_restarts.items()),
                'brokerRestarts': sorted(self.broker_restarts.items())}


def not_found(_environ, start_response):
    """The WSGI app behind the ``metricsPort`` listener's paths: 404."""
    start_response('404 Not Found', [('Content-Type', 'text/plain; charset=utf-8')])
    return [b'Not Found']


# -- rendering ------------------------------------------------------------------------------

def health_reasons(snapshot):
    """Why the cluster does not serve fully (empty when it does)."""
    if snapshot is None:
        return ['the master did not answer']
    reasons = []
    if snapshot['workerCluster'] != 'up':
        reasons.append('the worker cluster is %s' % snapshot['workerCluster'])
    for worker in snapshot['workers']:
        if worker['state'] != 'up':
            if snapshot['workerCluster'] == 'up':
                reasons.append('worker %s is %s' % (worker['id'], worker['state']))
            continue
        if not worker['listening']:
            reasons.append('worker %s is not listening' % worker['id'])
        reasons.extend('worker %s: the %s link is down%s' % (
            worker['id'], link[0], ' (%s)' % link[3] if len(link) > 3 and link[3] else '')
            for link in worker['links'] if not link[1])
    reasons.extend('broker %s is %s' % (broker['id'], broker['state'])
                   for broker in snapshot['brokers'] if broker['state'] != 'up')
    return reasons


def render_health(snapshot):
    """``(status, headers, body)``: 200 ``{"status": "ok", ...}`` when every worker listens
    and every broker and link is up, else 503 with the reasons."""
    reasons = health_reasons(snapshot)
    if reasons:
        return '503 Service Unavailable', JSON, codec.encode(
            {'status': 'unavailable', 'reasons': reasons}).encode('utf-8')
    return '200 OK', JSON, codec.encode({'status': 'ok', 'workers': len(snapshot['workers']),
                                         'brokers': len(snapshot['brokers'])}).encode('utf-8')


def render_metrics(snapshot):
    """``(status, headers, body)``: the Prometheus text exposition of ``snapshot`` (503
    when the master did not answer)."""
    if snapshot is None:
        return '503 Service Unavailable', PROMETHEUS, b'# the master did not answer\n'
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return '200 OK', PROMETHEUS, generate_latest(registry)


class SnapshotCollector:
    """A prometheus_client collector yielding the metric families of one cluster snapshot."""

    def __init__(self, snapshot):
        self.snapshot = snapshot

    def collect(self):
        """The metric families (prometheus_client's collector protocol)."""
        snapshot = self.snapshot
        # a worker still building its server answers without counters
        workers = [w for w in snapshot['workers'] if w['state'] == 'up' and 'handshakes' in w]
        up = GaugeMetricFamily('gsc_worker_up', 'Whether the worker answered and listens',
                               labels=['worker'])
        for worker in snapshot['workers']:
            up.add_metric([str(worker['id'])], int(worker['state'] == 'up' and worker['listening']))
        yield up
        yield from self._brokers()
        for key, name, text in WORKER_COUNTERS:
            family = CounterMetricFamily(name, text, labels=['worker'])
            for worker in workers:
                family.add_metric([str(worker['id'])], worker[key])
            yield family
        for key, name, text in WORKER_GAUGES:
            family = GaugeMetricFamily(name, text, labels=['worker'])
            for worker in workers:
                family.add_metric([str(worker['id'])], worker[key])
            yield family
        yield from self._links(workers)
        yield from self._restarts()

    def _brokers(self):
        brokers = GaugeMetricFamily('gsc_broker_up', 'Whether the broker process answered',
                                    labels=['broker'])
        links = GaugeMetricFamily('gsc_broker_worker_links', 'Workers linked to the broker',
                                  labels=['broker'])
        figures = [(key, kind(name, text, labels=['broker']))
                   for key, kind, name, text in BROKER_FIGURES]
        for broker in self.snapshot['brokers']:
            label = [str(broker['id'])]
            brokers.add_metric(label, int(broker['state'] == 'up'))
            if broker['state'] == 'up':
                links.add_metric(label, broker['connections'])
                for key, family in figures:
                    family.add_metric(label, broker[key])
        yield brokers
        yield links
        for _key, family in figures:
            yield family

    @staticmethod
    def _links(workers):
        broker_up = GaugeMetricFamily('gsc_broker_link_up', "Whether the worker's link to the "
                                      'broker is up', labels=['worker', 'broker'])
        broker_lost = CounterMetricFamily('gsc_broker_reconnects', "Times the worker's link to "
                                          'the broker was lost and reconnecting began',
                                          labels=['worker', 'broker'])
        redis_up = GaugeMetricFamily('gsc_redis_link_up', "Whether the worker's link to Redis "
                                     'is up', labels=['worker'])
        redis_lost = CounterMetricFamily('gsc_redis_reconnects', "Times the worker's link to "
                                         'Redis was lost and reconnecting began', labels=['worker'])
        for worker in workers:
            for name, is_up, losses, *_reason in worker['links']:
                if name == 'redis':
                    redis_up.add_metric([str(worker['id'])], int(is_up))
                    redis_lost.add_metric([str(worker['id'])], losses)
                elif name.startswith('broker '):
                    labels = [str(worker['id']), name.split()[1]]
                    broker_up.add_metric(labels, int(is_up))
                    broker_lost.add_metric(labels, losses)
        return broker_up, broker_lost, redis_up, redis_lost

    def _restarts(self):
        snapshot = self.snapshot
        for key, slots, name, label in (
                ('workerRestarts', 'workers', 'gsc_worker_restarts', 'worker'),
                ('brokerRestarts', 'brokers', 'gsc_broker_restarts', 'broker')):
            counts = dict(snapshot[key])
            family = CounterMetricFamily(name, 'Times the %s was respawned' % label,
                                         labels=[label])
            for process in snapshot[slots]:
                family.add_metric([str(process['id'])], counts.get(process['id'], 0))
            yield family
