"""The live cluster dashboard: a real cluster of two workers with the
dashboard on, seen by headless Chromium (tests/js/dashboard.js) and by the Python client;
the sans-I/O cores (Feed, LoginGuard) and the options on their own."""

import urllib.error
import urllib.request

import jwt
import pytest

from gsc.cluster import dashboard
from gsc.cluster import options as options_module
from gsc.errors import AuthError, BrokerError, InvalidOptionsError
from master_harness import start_cluster
from test_browser import pytestmark as BROWSER_MARKS, run_driver
from test_metrics import child_pid

PASSWORD = 'correct horse battery staple'
AUTH_KEY = 'the dashboard test auth key'
CLUSTER = {'workers': 2, 'brokers': 1, 'workerController': 'tests.controllers.metrics_worker',
           'logLevel': 0, 'authKey': AUTH_KEY, 'dashboard': True, 'dashboardPassword': PASSWORD}
PNG = b'\x89PNG\r\n\x1a\n'


def get(port, path):
    """``(status, headers, body bytes)`` of ``GET path``."""
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=8) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def worker_pids(master):
    """The real pids of workers 0 and 1, from their start events."""
    return [child_pid(master, 'workerStart', worker_id) for worker_id in (0, 1)]


def needs_chromium(test):
    """``test`` with the skip rules and the time limit of tests/test_browser.py."""
    for mark in BROWSER_MARKS:
        test = mark(test)
    return test


@needs_chromium
def test_chromium_logs_in_and_sees_both_workers_live(request, tmp_path):
    master = start_cluster(request, CLUSTER)
    pids = worker_pids(master)
    token = jwt.encode({'gscDashboard': True}, AUTH_KEY, algorithm='HS256')
    url = 'http://127.0.0.1:%d/gsc/dashboard' % master.port
    screenshot = tmp_path / 'dashboard.png'
    events = run_driver([url, PASSWORD, str(screenshot), url + '#token=' + token], tmp_path,
                        script='dashboard.js')
    result = events[-1]
    assert result['event'] == 'result', events
    assert result['refused'] == 'Wrong dashboard password'
    assert sorted(result['pids']) == sorted(pids)
    assert [chart['title'] for chart in result['charts']] == [
        'Connections', 'Messages per second', 'Resident memory']
    assert all(chart['painted'] > 1000 for chart in result['charts']), result['charts']
    assert result['shown']['status'] == 'live' and result['shown']['brokers'] == 1
    assert sorted(result['token']['pids']) == sorted(pids)
    assert 'token' not in result['token']['url'] and not result['token']['loginShown']
    assert not [e for e in events if e['event'] == 'pageerror'], events
    data = screenshot.read_bytes()
    assert data[:8] == PNG and len(data) > 30000


def test_only_a_dashboard_token_may_subscribe_to_the_feed(request, clients):
    master = start_cluster(request, CLUSTER)
    pids = worker_pids(master)
    client = clients(master.port)
    client.wait_for('open', 5)
    with pytest.raises(BrokerError, match='reserved channel'):
        client.invoke('#subscribe', {'channel': dashboard.CHANNEL})
    with pytest.raises(BrokerError, match='reserved channel'):
        client.invoke('#publish', {'channel': dashboard.CHANNEL, 'data': {'workers': []}})
    with pytest.raises(AuthError, match='Wrong dashboard password'):
        client.invoke(dashboard.LOGIN_EVENT, {'password': 'guess'})
    assert client.auth_token is None
    client.invoke(dashboard.LOGIN_EVENT, {'password': PASSWORD})
    assert client.auth_token['gscDashboard'] is True
    messages = watch_feed(client)
    last = next_message(client, messages,
                        lambda message: all('pid' in w for w in message['workers']))
    assert sorted(w['pid'] for w in last['workers']) == sorted(pids)
    assert last['workerCluster'] == 'up' and last['redis'] is None
    assert [b['state'] for b in last['brokers']] == ['up']
    assert all(w['rss'] > 1000000 for w in last['workers'])
    client.deauthenticate()
    assert client.wait_for('kickOut', 5)[1] == dashboard.CHANNEL
    with pytest.raises(BrokerError, match='reserved channel'):
        client.invoke('#subscribe', {'channel': dashboard.CHANNEL})


def test_instances_on_redis_share_the_feed_each_naming_itself(request, redis_server, clients):
    masters = [start_cluster(request, dict(
        CLUSTER, workers=1, brokers=0, brokerEngine='redis',
        brokerEngineOptions={'url': redis_server.url}), ready=False) for _ in range(2)]
    for master in masters:
        master.ready(timeout=30)
    client = clients(masters[0].port)
    client.invoke(dashboard.LOGIN_EVENT, {'password': PASSWORD})
    messages = watch_feed(client)
    next_message(client, messages, lambda _message: len({m['instance'] for m in messages}) == 2)
    assert all(m['redis'] == {'up': 1, 'of': 1} and m['brokers'] == [] for m in messages)


def watch_feed(client):
    """The list the feed's messages go into, once ``client`` subscribed to it."""
    messages = []
    client.subscribe(dashboard.CHANNEL).watch(messages.append)
    client.wait_for('subscribe', 5)
    return messages


def next_message(client, messages, check, count=8):
    """The first message of the feed for which ``check(message)`` holds, among the next
    ``count``."""
    for _ in range(count):
        client.wait_for('message', 5)
        if messages and check(messages[-1]):
            return messages[-1]
    raise AssertionError('no such feed message in %r' % messages[-3:])


def test_logins_are_bounded_per_socket(request, clients):
    master = start_cluster(request, CLUSTER)
    client = clients(master.port)
    for _ in range(dashboard.MAX_ATTEMPTS):
        with pytest.raises(AuthError, match='Wrong'):
            client.invoke(dashboard.LOGIN_EVENT, {'password': 'guess'})
    with pytest.raises(AuthError, match='Too many dashboard login attempts'):
        client.invoke(dashboard.LOGIN_EVENT, {'password': PASSWORD})
    with pytest.raises(BrokerError, match='reserved channel'):
        client.invoke('#subscribe', {'channel': dashboard.CHANNEL})


def test_the_page_is_served_with_its_assets_only_when_enabled(request):
    master = start_cluster(request, dict(CLUSTER, dashboardPath='/ops', workers=1))
    status, headers, body = get(master.port, '/ops')
    assert status == 200 and headers['Content-Type'] == 'text/html; charset=utf-8'
    assert "frame-ancestors 'none'" in headers['Content-Security-Policy']
    assert b'src="/ops/dashboard.js"' in body and b'data-socket-path="/socketcluster/"' in body
    for name in dashboard.ASSETS:
        status, _headers, asset = get(master.port, '/ops/' + name)
        assert status == 200 and len(asset) > 500, name
    off = start_cluster(request, dict(CLUSTER, dashboard=False, workers=1))
    assert get(off.port, '/gsc/dashboard')[0] != 200


@pytest.mark.parametrize('options, named', [
    ({'dashboard': 'yes'}, 'dashboard option'),
    ({'dashboardPath': 'ops'}, 'dashboardPath'),
    ({'dashboardPath': '/ops/'}, 'dashboardPath'),
    ({'dashboardPath': '/metrics'}, 'metricsPath'),
    ({'dashboardPath': '/socketcluster'}, 'the path option'),
    ({'dashboardPassword': ''}, 'dashboardPassword'),
    ({'dashboard_password': 42}, 'dashboardPassword'),
])
def test_bad_dashboard_options_are_refused_by_name(options, named):
    merged = options_module.merge(dict(options, workerController='x'))
    with pytest.raises(InvalidOptionsError, match=named):
        options_module.validate(merged)


def test_the_feed_computes_rates_per_process_and_restarts_them_on_a_new_pid():
    feed = dashboard.Feed('instance-1', 'app')

    def snapshot(pid, received, publishes):
        worker = {'id': 0, 'state': 'up', 'pid': pid, 'handshakes': 1, 'connections': 3,
                  'clients': 3, 'subscriptions': 0, 'rss': 5, 'messagesReceived': received,
                  'messagesSent': 2 * received, 'links': [['redis', True, 0]]}
        broker = {'id': 0, 'state': 'up', 'pid': 9, 'connections': 1, 'channels': 2, 'keys': 0,
                  'publishes': publishes, 'rss': 7}
        return {'workerCluster': 'up', 'workers': [worker, {'id': 1, 'state': 'silent'}],
                'brokers': [broker], 'workerRestarts': [[0, 1]], 'brokerRestarts': []}
    first = feed.message(snapshot(100, 10, 0), 50.0, 1000.0)
    assert first['workers'][0]['inPerSec'] is None and first['time'] == 1000000
    assert (first['instance'], first['appName']) == ('instance-1', 'app')
    second = feed.message(snapshot(100, 30, 8), 52.0, 1002.0)
    assert (second['workers'][0]['inPerSec'], second['workers'][0]['outPerSec']) == (10, 20)
    assert second['brokers'][0]['publishesPerSec'] == 4
    assert second['workers'][0]['restarts'] == 1 and second['workers'][1] == {
        'id': 1, 'state': 'silent', 'restarts': 0}
    assert second['redis'] == {'up': 1, 'of': 1}
    respawned = feed.message(snapshot(101, 2, 9), 53.0, 1003.0)
    assert respawned['workers'][0]['inPerSec'] is None
    assert feed.message(None, 54.0, 1004.0)['error'] == 'the master did not answer'


def test_the_login_guard_bounds_failures_of_the_whole_worker():
    guard = dashboard.LoginGuard('secret')
    for attempt in range(dashboard.MAX_FAILURES):
        assert 'Wrong' in guard.refusal(0, {'password': 'x%d' % attempt}, 100.0).message
    assert 'Too many failed' in guard.refusal(0, {'password': 'secret'}, 101.0).message
    assert guard.refusal(0, {'password': 'secret'}, 100.0 + dashboard.FAILURE_WINDOW) is None
    assert isinstance(guard.refusal(0, 'secret', 200.0), dashboard.InvalidArgumentsError)
    assert 'no password' in dashboard.LoginGuard(None).refusal(0, {'password': 'x'}, 0).message
