"""The option registry: every option of gsc once, with its default, check, command-line flag,
environment variable, scope and one line of doc.

Keys are SocketCluster's camelCase strings (its SocketCluster and SCServer API pages:
https://socketcluster.io/docs/14.4.2/api-socketcluster, .../api-scserver), with its defaults.  The scope says who reads an option:

* ``server``: an option of SCServer, read by :func:`gsc.listen` and :func:`gsc.attach`
  (:func:`normalise_server_options`); the master accepts it too and hands it to the SCServer of
  every worker;
* ``cluster``: read by the master and its processes only (:mod:`gsc.cluster.options`).

One option has a default of each scope: ``brokerEngine`` is ``simple`` (in-process) for a
standalone server and ``sc-broker-cluster`` (the broker processes) under the master, as in
SocketCluster.  Checks of one value live here; checks that compare options (a metrics path
other than the realtime path, brokers 0 only with Redis) live with the cluster.  The README's
options table is :func:`markdown_table`.
"""

import re
import signal

from ..errors import InvalidOptionsError
from .checks import MAX_TIMEOUT, check_number, is_int, is_number
from .history import DEFAULT_MAX_HISTORY_BYTES, HistoryRules
from .presence import PresenceRules

SERVER = 'server'
CLUSTER = 'cluster'
INFINITE = float('inf')
ENGINE_NAMES = ('sc-broker-cluster', 'broker', 'redis', 'simple', 'sc-simple-broker')
"""The ``brokerEngine`` names: the broker processes (``broker`` is an alias), Redis, in-process."""
DEFLATE_OPTIONS = {'serverNoContextTakeover': 'server_no_context_takeover',
                   'clientNoContextTakeover': 'client_no_context_takeover',
                   'serverMaxWindowBits': 'server_max_window_bits',
                   'clientMaxWindowBits': 'client_max_window_bits'}
"""perMessageDeflate settings (ws's names) and the arguments of websockets' deflate factory."""
MAX_PASSWORD_LENGTH = 1024
_SNAKE = re.compile(r'_([a-z0-9])')


class Option:
    """One option: ``name`` (SocketCluster's key), ``default``, ``scope`` (SERVER or CLUSTER),
    ``doc`` (one line, Markdown), ``check(key, value)`` (raises InvalidOptionsError; None: any
    value), ``normalise(value)`` (what SCServer keeps; None: the value itself), ``flags`` and
    ``env`` (command-line flags and ``SOCKETCLUSTER_*`` variables, read as ``cli_type``),
    ``cluster_default`` (the master's default when it differs) and ``shown`` (the default as
    the README says it, when its value does not say it well)."""

    __slots__ = ('name', 'default', 'scope', 'doc', 'check', 'normalise', 'flags', 'env',
                 'cli_type', 'cluster_default', 'shown')

    def __init__(self, name, default, scope, doc, check=None, normalise=None, flags=(), env=(),
                 cli_type=str, cluster_default=None, shown=None):
        self.name = name
        self.default = default
        self.scope = scope
        self.doc = doc
        self.check = check
        self.normalise = normalise
        self.flags = flags
        self.env = env
        self.cli_type = cli_type
        self.cluster_default = default if cluster_default is None else cluster_default
        self.shown = shown

    def validate(self, options):
        """Check this option's value in ``options``."""
        if self.check is not None:
            self.check(self.name, options.get(self.name))


# -- checks of one value ------------------------------------------------------------------

def number(minimum=0, maximum=MAX_TIMEOUT, none=False, whole=False):
    """A number from ``minimum`` to ``maximum`` (an int when ``whole``; None when ``none``)."""
    def check(key, value):
        check_number({key: value}, key, minimum, maximum, allow_none=none, whole=whole)
    return check


def boolean(key, value):
    """True or False."""
    if not isinstance(value, bool):
        raise InvalidOptionsError('The %s option must be true or false, not %r' % (key, value))


def one_of(*values):
    """One of ``values``."""
    def check(key, value):
        if value not in values:
            raise InvalidOptionsError('The %s option must be %s, not %r' % (
                key, ' or '.join(repr(v) for v in values), value))
    return check


def controller(key, value):
    """None or the name of a controller."""
    if value is not None and not isinstance(value, str):
        raise InvalidOptionsError('The %s option must be a controller name' % key)


def wsgi_name(key, value):
    """None or a ``'module:attr'`` name."""
    if value is not None and not (isinstance(value, str) and value):
        raise InvalidOptionsError("The wsgiApp option must be a 'module:attr' name")


def string(key, value):
    """A string."""
    if not isinstance(value, str):
        raise InvalidOptionsError('The %s option must be a string, not %r' % (key, value))


def url_path(key, value):
    """None or a path starting with /."""
    if value is not None and not (isinstance(value, str) and value.startswith('/')):
        raise InvalidOptionsError('The %s option must be a path starting with / or None' % key)


def page_path(key, value):
    """A path starting with /, not / itself, not ending with /."""
    if not (isinstance(value, str) and value.startswith('/') and len(value) > 1
            and not value.endswith('/')):
        raise InvalidOptionsError('The %s option must be a path starting with / and not ending '
                                  'with /' % key)


def password(key, value):
    """None or a string of 1 to MAX_PASSWORD_LENGTH characters."""
    if value is not None and not (isinstance(value, str) and 0 < len(value) <= MAX_PASSWORD_LENGTH):
        raise InvalidOptionsError('The %s option must be None or a string of 1 to %d characters'
                                  % (key, MAX_PASSWORD_LENGTH))


def port(minimum):
    """A TCP port from ``minimum`` to 65535."""
    def check(key, value):
        if not (is_int(value) and minimum <= value <= 65535):
            raise InvalidOptionsError('The %s option must be an integer between %d and 65535'
                                      % (key, minimum))
    return check


def optional_port(key, value):
    """None or a TCP port from 1 to 65535."""
    if value is not None:
        port(1)(key, value)


def count(key, value):
    """None (one process) or a whole number of processes (``2.0`` included)."""
    if value is not None and not (is_number(value) and value == int(value)):
        raise InvalidOptionsError('The %s option must be a number' % key)


def kill_signal(key, value):
    """A signal name like ``SIGHUP`` (or its number)."""
    number_ = getattr(signal, str(value).upper(), value)
    if not isinstance(number_, int):
        raise InvalidOptionsError('The %s option must be a signal name like SIGHUP' % key)


def deflate(key, value):
    """None, True, False or a dict of DEFLATE_OPTIONS."""
    if value not in (None, False, True) and not (
            isinstance(value, dict) and set(value) <= set(DEFLATE_OPTIONS)):
        raise InvalidOptionsError('The %s option must be true, false or a dict of %s'
                                  % (key, ', '.join(DEFLATE_OPTIONS)))


def origins_list(key, value):
    """A string of entries (space or comma separated) or a list of strings."""
    if not (isinstance(value, str) or (isinstance(value, (list, tuple))
                                       and all(isinstance(o, str) for o in value))):
        raise InvalidOptionsError('The %s option must be a string or a list of strings' % key)


def history_rules(key, value):
    """A valid ``channelHistory``."""
    HistoryRules(value)


def max_history_bytes(key, value):
    """A valid ``maxHistoryBytes``."""
    HistoryRules(None, value)


def presence_rules(key, value):
    """A valid ``channelPresence``."""
    PresenceRules(value)


def normalise_path(path):
    """Exactly one leading and one trailing slash."""
    return '/' + path.strip('/') + '/' if path.strip('/') else '/'


def normalise_origins(origins):
    """``'a:* b:80'`` or ``'a:*,b:80'`` -> ``['a:*', 'b:80']``; a list is copied."""
    return origins.replace(',', ' ').split() if isinstance(origins, str) else list(origins)


# -- the registry ---------------------------------------------------------------------------

COMPAT = 'accepted for compatibility, no effect in gsc'

OPTIONS = (
    # the process tree
    Option('port', 8000, CLUSTER, 'TCP port of every worker (SO_REUSEPORT balances connections)',
           port(0), flags=('-p', '--port'), env=('SOCKETCLUSTER_PORT',), cli_type=int),
    Option('host', None, CLUSTER, 'bind address of the workers', flags=('--host',),
           env=('SOCKETCLUSTER_HOST',), shown='all addresses'),
    Option('workers', None, CLUSTER, 'worker processes', count, flags=('-w', '--workers'),
           env=('SOCKETCLUSTER_WORKERS',), cli_type=int, shown='1'),
    Option('brokers', None, CLUSTER,
           "broker processes (0 allowed when `brokerEngine` is not `sc-broker-cluster`)", count,
           flags=('-b', '--brokers'), env=('SOCKETCLUSTER_BROKERS',), cli_type=int, shown='1'),
    Option('workerController', None, CLUSTER,
           'worker module: a name in `controllers/` or a dotted name, `run(worker)`', controller,
           flags=('--wc',), env=('SOCKETCLUSTER_WORKER_CONTROLLER',), shown='required'),
    Option('brokerController', None, CLUSTER, 'broker module, `run(broker)`', controller,
           flags=('--bc',), env=('SOCKETCLUSTER_BROKER_CONTROLLER',)),
    Option('workerClusterController', None, CLUSTER,
           'worker cluster module, `run(worker_cluster)`', controller, flags=('--wcc',),
           env=('SOCKETCLUSTER_WORKERCLUSTER_CONTROLLER',)),
    Option('wsgiApp', None, CLUSTER,
           "WSGI app served beside the realtime path: `'module:attr'`, the module in "
           "`controllers/` or a dotted name", wsgi_name, flags=('--app',),
           env=('SOCKETCLUSTER_WSGI_APP',)),
    Option('run', None, CLUSTER, "a function the master calls with itself once it started"),
    Option('paths', None, CLUSTER,
           "`{appDirPath}`: the directory of `controllers/` (the command line sets it)"),
    Option('environment', 'dev', CLUSTER,
           '`dev` or `prod`; `dev`: hot reboot on controller changes, immediate SIGUSR2 reboots',
           one_of('dev', 'prod'), flags=('-e', '--environment'),
           env=('SOCKETCLUSTER_ENV', 'ENV')),
    Option('logLevel', 2, CLUSTER,
           "0 silent, 1 errors, 2 notices and warnings, 3 debug; also caps the libraries' loggers",
           number(whole=True, maximum=INFINITE), flags=('--log-level',),
           env=('SOCKETCLUSTER_LOG_LEVEL',), cli_type=int),
    Option('appName', None, SERVER, 'name of the app (process titles, the run directory)',
           flags=('-n', '--app-name'), env=('SOCKETCLUSTER_APP_NAME',), shown='random uuid'),
    Option('instanceId', None, CLUSTER, 'name of this instance of the app', shown='random uuid'),
    Option('secretKey', None, CLUSTER, 'proves workers and brokers to each other',
           shown='random'),
    Option('ipcAckTimeout', 10000, CLUSTER, 'answer timeout between processes', number()),
    Option('startTimeout', 30000, CLUSTER,
           'every worker must listen within it, else the start fails (exit 1)', number()),
    Option('crashWorkerOnError', True, CLUSTER,
           'a worker `error` ends the worker (it is respawned)', boolean),
    Option('rebootWorkerOnCrash', True, CLUSTER, 'respawn workers that exit', boolean),
    Option('killWorkerMemoryThreshold', None, CLUSTER,
           'bytes of memory above which a worker restarts itself',
           number(minimum=1, maximum=INFINITE, none=True)),
    Option('workerStatusInterval', 10000, CLUSTER,
           'period of `worker.get_status()` figures and the memory check', number()),
    Option('propagateErrors', True, CLUSTER, "worker errors reach the master's `fail`", boolean),
    Option('propagateWarnings', True, CLUSTER, "worker warnings reach the master's `warning`",
           boolean),
    Option('processTermTimeout', 10000, CLUSTER, 'grace period of a stopping process', number()),
    Option('forceKillTimeout', 15000, CLUSTER,
           'workers still running this long after `kill_workers()` get `forceKillSignal`',
           number()),
    Option('forceKillSignal', 'SIGHUP', CLUSTER, 'the signal of `forceKillTimeout`', kill_signal),
    Option('rebootOnSignal', True, CLUSTER, 'SIGUSR2 reboots the workers', boolean),
    Option('killMasterOnSignal', False, CLUSTER, 'the master exits after SIGUSR2', boolean),
    Option('protocol', 'http', CLUSTER, '`http` or `https` (with `protocolOptions`)',
           one_of('http', 'https')),
    Option('protocolOptions', None, CLUSTER,
           '`{key, cert, passphrase, ca}` (PEM text or files) for `https`'),
    Option('tcpSynBacklog', None, CLUSTER, 'listen backlog',
           number(maximum=INFINITE, none=True, whole=True), shown='511'),
    Option('socketRoot', None, CLUSTER, "directory of the brokers' unix sockets",
           shown='a private directory'),
    Option('downgradeToUser', False, CLUSTER, 'user name or uid the children switch to'),
    Option('maxBrokerQueueBytes', None, CLUSTER,
           'what a worker holds for its brokers (see [Limits and defaults](#limits-and-defaults))',
           number(minimum=1, maximum=INFINITE, none=True), shown='16 MiB'),
    Option('healthPath', '/health', CLUSTER,
           '200 `{"status": "ok", "workers": N, "brokers": M}` when every worker listens and every '
           'broker and broker/Redis link is up, else 503 with the reasons; None: off', url_path),
    Option('metricsPath', '/metrics', CLUSTER,
           'Prometheus text format of the whole cluster (per-worker series labelled `worker`); '
           'None: off', url_path),
    Option('metricsPort', None, CLUSTER,
           'none: both paths on the public port (any worker answers for the cluster); a port: '
           'only the master serves them, on `host:metricsPort`', optional_port),
    Option('accessLog', False, CLUSTER,
           'one line per HTTP request (logger `gsc.access`), not for WebSocket upgrades', boolean),
    Option('memoryReleaseDrop', 1000, CLUSTER,
           'a worker whose connections fell this much (and by 10% of their peak) and stopped '
           'falling gives memory back; None: off',
           number(minimum=1, maximum=INFINITE, none=True, whole=True)),
    Option('memoryReleaseInterval', 5000, CLUSTER, 'period of the memory release check',
           number(minimum=100)),
    Option('dashboard', False, CLUSTER, 'serve the live dashboard at `dashboardPath`', boolean),
    Option('dashboardPath', '/gsc/dashboard', CLUSTER, 'URL path of the live dashboard', page_path),
    Option('dashboardPassword', None, CLUSTER,
           'password of the dashboard; none: only tokens with `gscDashboard: true` open it',
           password),
    # the realtime server
    Option('path', '/socketcluster/', SERVER, 'WebSocket URL path', string, normalise_path,
           flags=('--path',), env=('SOCKETCLUSTER_PATH',)),
    Option('origins', '*:*', SERVER, 'allowed origins: `host:port`, `host:*`, `*:port` entries',
           origins_list, normalise_origins),
    Option('handshakeTimeout', 10000, SERVER, 'time allowed for `#handshake` (else close 4005)',
           number(minimum=1)),
    Option('ackTimeout', 10000, SERVER, 'server emit acknowledgement timeout', number(minimum=1)),
    Option('pingInterval', 8000, SERVER, 'period of the `#1` pings', number(minimum=1)),
    Option('pingTimeout', 20000, SERVER, 'silence before close 4001', number(minimum=1)),
    Option('pingTimeoutDisabled', False, SERVER, 'no pings, no pong timeout', boolean),
    Option('strictHandshake', True, SERVER, 'anything before `#handshake` closes with 4009',
           boolean),
    Option('authKey', None, SERVER, 'HS256 key of the JWTs (give it to all instances of an app)',
           shown='random'),
    Option('authPrivateKey', None, SERVER, 'RS256/ES256 signing key instead (with `authAlgorithm`)'),
    Option('authPublicKey', None, SERVER, 'RS256/ES256 verifying key'),
    Option('authAlgorithm', None, SERVER, 'signing algorithm', shown='HS256'),
    Option('authVerifyAlgorithms', None, SERVER, 'accepted algorithms',
           shown='`authAlgorithm`'),
    Option('authDefaultExpiry', 86400, SERVER, 'token lifetime in seconds', number(minimum=1)),
    Option('authSignAsync', False, SERVER, COMPAT),
    Option('authVerifyAsync', True, SERVER, COMPAT),
    Option('authEngine', None, SERVER,
           'an object with `sign_token` and `verify_token` instead of the JWT engine'),
    Option('codecEngine', None, SERVER, 'an object with `encode` and `decode` instead of JSON'),
    Option('allowClientPublish', True, SERVER, 'clients may `#publish`', boolean),
    Option('socketChannelLimit', 1000, SERVER, 'channels per socket',
           number(maximum=INFINITE, none=True), flags=('--channel-limit',),
           env=('SOCKETCLUSTER_SOCKET_CHANNEL_LIMIT',), cli_type=int),
    Option('pubSubBatchDuration', None, SERVER, 'delay of batched `#subscribe` answers',
           number(none=True)),
    Option('middlewareEmitWarnings', True, SERVER,
           'non-silent middleware errors become `warning`', boolean),
    Option('perMessageDeflate', None, SERVER,
           '`true`, or `{serverNoContextTakeover, clientNoContextTakeover, serverMaxWindowBits, '
           'clientMaxWindowBits}`: compress with clients that offer it', deflate, shown='off'),
    Option('maxPayload', 1024 * 1024, SERVER,
           'largest inbound message, decompressed (close 1009); see [Limits and '
           'defaults](#limits-and-defaults) for the other limits',
           number(minimum=1, maximum=INFINITE, none=True), shown='1 MiB'),
    Option('maxBatchPackets', 1000, SERVER, 'packets in one batch frame',
           number(minimum=1, maximum=INFINITE)),
    Option('maxChannelNameLength', 1024, SERVER, 'characters of a channel name',
           number(minimum=1, maximum=INFINITE)),
    Option('maxOutboundBytes', 16 * 1024 * 1024, SERVER,
           'bytes a client may leave unread before it is closed (1013)',
           number(minimum=1, maximum=INFINITE), shown='16 MiB'),
    Option('maxConnections', None, SERVER, 'connections of one worker (then 503)',
           number(minimum=1, maximum=INFINITE, none=True),
           shown='the open-files limit minus 10%'),
    Option('inboundMessagesPerSecond', 10000, SERVER,
           'packets a second one socket may send (a burst of one second\'s worth); past it an '
           'event is answered with `RateLimitError`; None: no limit',
           number(minimum=1, maximum=INFINITE, none=True)),
    Option('inboundBytesPerSecond', 16 * 1024 * 1024, SERVER,
           'bytes a second one socket may send (frames, a burst of one second\'s worth); past '
           'it the frame\'s events are refused; None: no limit',
           number(minimum=1, maximum=INFINITE, none=True), shown='16 MiB'),
    Option('rateLimitGrace', 10000, SERVER,
           'ms a socket may stay over its rate limits (refused at least once a second) before it is closed (4429)',
           number(minimum=0)),
    Option('headersTimeout', 10000, SERVER, 'time allowed for the HTTP request line and headers',
           number(minimum=1)),
    Option('maxHeaderSize', 16 * 1024, SERVER, 'bytes of the HTTP request line and headers',
           number(minimum=1, maximum=INFINITE), shown='16 KiB'),
    Option('brokerEngine', 'simple', SERVER,
           '`sc-broker-cluster` (the broker processes), `redis` (several machines) or `simple` '
           '(in-process)', one_of(*ENGINE_NAMES), cluster_default='sc-broker-cluster',
           shown='`sc-broker-cluster` (cluster), `simple` (server)'),
    Option('brokerEngineOptions', None, SERVER,
           'Redis: `{"url": "redis://...", "keyPrefix": "gsc:", "connectTimeout": 5000, '
           '"poolSize": 32}` (connecting, and the longest a publish waits for Redis; '
           'connections per worker, past them a publish fails at once with BrokerError)'),
    Option('channelHistory', {}, SERVER,
           '`{pattern: {size: 100, ttl: 300, maxBytes: 1 MiB, publishOffsets: false}}`: channels '
           'that keep their last publications with offsets (first fnmatch match wins)',
           history_rules),
    Option('maxHistoryBytes', DEFAULT_MAX_HISTORY_BYTES, SERVER,
           "history one owner (a broker, a standalone worker) keeps over all channels; past it "
           "the least recently published channel's history is dropped (new epoch)",
           max_history_bytes, shown='64 MiB'),
    Option('channelPresence', {}, SERVER,
           "`{pattern: {maxMembers: 1000, joinLeave: true, userField: 'username'}}`: channels "
           "that track their subscribers", presence_rules),
    # SocketCluster's, without effect in gsc
    Option('wsEngine', 'ws', SERVER, COMPAT),
    Option('wsEngineServerOptions', None, SERVER, COMPAT),
    Option('schedulingPolicy', None, CLUSTER, COMPAT + ' (the kernel balances with SO_REUSEPORT)'),
    Option('defaultWorkerDebugPort', 5858, CLUSTER, COMPAT),
    Option('defaultBrokerDebugPort', 6858, CLUSTER, COMPAT),
    Option('brokerConnectRetryErrorThreshold', None, CLUSTER, COMPAT),
)

BY_NAME = {option.name: option for option in OPTIONS}
SERVER_OPTIONS = tuple(option for option in OPTIONS if option.scope == SERVER)


def defaults(scope):
    """``{name: default}``: the server options' defaults for SERVER, every option's (the
    master's) for CLUSTER."""
    if scope == SERVER:
        return {option.name: option.default for option in SERVER_OPTIONS}
    return {option.name: option.cluster_default for option in OPTIONS}


def to_camel(key):
    """``ping_timeout`` -> ``pingTimeout``; camelCase keys are returned unchanged."""
    return _SNAKE.sub(lambda m: m.group(1).upper(), key) if '_' in key else key


def camel_keys(options):
    """A copy of ``options`` with every key in SocketCluster's camelCase spelling."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidOptionsError('The options must be a dict, not %s' % type(options).__name__)
    return {to_camel(key): value for key, value in options.items()}


def normalise_server_options(options):
    """The options of an SCServer: the server defaults overlaid with ``options`` (either
    spelling), each server option checked and normalised; other keys are kept."""
    merged = defaults(SERVER)
    merged.update(camel_keys(options))
    for option in SERVER_OPTIONS:
        option.validate(merged)
        if option.normalise is not None:
            merged[option.name] = option.normalise(merged[option.name])
    return merged


def with_flags():
    """The options set by command-line flags and environment variables."""
    return tuple(option for option in OPTIONS if option.flags)


def _shown(option):
    if option.shown is not None:
        return option.shown
    value = option.default
    if value is None:
        return 'none'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return '`%s`' % value
    if isinstance(value, dict):
        return '`{}`'
    return str(value)


def markdown_table():
    """The README's options table: one row per option, in the registry's order."""
    rows = ['| option | default | scope | flag, variable | meaning |',
            '| --- | --- | --- | --- | --- |']
    for option in OPTIONS:
        cli = ', '.join('`%s`' % name for name in option.flags + option.env)
        rows.append('| `%s` | %s | %s | %s | %s |'
                    % (option.name, _shown(option), option.scope, cli, option.doc))
    return '\n'.join(rows) + '\n'
