"""The options of a SocketCluster: defaults, spelling, validation and derived values.

Keys are SocketCluster's camelCase names (its master API page:
https://socketcluster.io/docs/14.4.2/api-socketcluster); snake_case spellings of the
known keys are accepted and turned into camelCase; any other key is kept as given and
reaches every process unchanged.
"""

import binascii
import difflib
import os
import signal
import ssl
import tempfile
import uuid

from gevent import ssl as gevent_ssl

from .cluster import dashboard, memory, metrics
from .errors import InvalidOptionsError
from .core.history import DEFAULT_MAX_HISTORY_BYTES, HistoryRules
from .core.presence import PresenceRules
from .server.server_options import LIMITS, SERVER_DEFAULTS, check_number, to_camel

MAX_DURATION = 2147483647
ENVIRONMENTS = ('dev', 'prod')
LOCAL_BROKER_ENGINES = ('sc-broker-cluster', 'broker')
"""The engine names meaning "the cluster's own broker processes" (SocketCluster's default)."""

DEFAULTS = {
    'port': 8000,
    'workers': None,
    'brokers': None,
    'appName': None,
    'instanceId': None,
    'secretKey': None,
    'authKey': None,
    'authPrivateKey': None,
    'authPublicKey': None,
    'authDefaultExpiry': 86400,
    'authAlgorithm': None,
    'authVerifyAlgorithms': None,
    'authSignAsync': False,
    'authVerifyAsync': True,
    'crashWorkerOnError': True,
    'rebootWorkerOnCrash': True,
    'killWorkerMemoryThreshold': None,
    'protocol': 'http',
    'protocolOptions': None,
    'logLevel': 2,
    'accessLog': False,
    'handshakeTimeout': 10000,
    'ackTimeout': 10000,
    'ipcAckTimeout': 10000,
    'pingInterval': 8000,
    'pingTimeout': 20000,
    'pingTimeoutDisabled': False,
    'origins': '*:*',
    'socketChannelLimit': 1000,
    'workerStatusInterval': 10000,
    'processTermTimeout': 10000,
    'startTimeout': 30000,
    'forceKillTimeout': 15000,
    'forceKillSignal': 'SIGHUP',
    'propagateErrors': True,
    'propagateWarnings': True,
    'middlewareEmitWarnings': True,
    'host': None,
    'tcpSynBacklog': None,
    'workerController': None,
    'brokerController': None,
    'brokerConnectRetryErrorThreshold': None,
    'workerClusterController': None,
    'wsgiApp': None,
    'rebootOnSignal': True,
    'downgradeToUser': False,
    'path': '/socketcluster/',
    'socketRoot': None,
    'schedulingPolicy': None,
    'allowClientPublish': True,
    'defaultWorkerDebugPort': 5858,
    'defaultBrokerDebugPort': 6858,
    'pubSubBatchDuration': None,
    'environment': 'dev',
    'killMasterOnSignal': False,
    'wsEngine': 'ws',
    'brokerEngine': 'sc-broker-cluster',
    'healthPath': '/health',
    'metricsPath': '/metrics',
    'metricsPort': None,
    'channelHistory': {},
    'maxHistoryBytes': DEFAULT_MAX_HISTORY_BYTES,
    'channelPresence': {},
    'dashboard': False,
    'dashboardPath': '/gsc/dashboard',
    'dashboardPassword': None,
    'memoryReleaseDrop': memory.DEFAULTS['memoryReleaseDrop'],
    'memoryReleaseInterval': memory.DEFAULTS['memoryReleaseInterval'],
}

OTHER_KNOWN = ('run', 'perMessageDeflate', 'maxPayload', 'wsEngineServerOptions', 'paths',
               'maxBatchPackets', 'maxChannelNameLength', 'maxOutboundBytes', 'maxConnections',
               'headersTimeout', 'maxHeaderSize', 'maxBrokerQueueBytes')

DURATIONS = ('ackTimeout', 'ipcAckTimeout', 'pingInterval', 'pingTimeout',
             'workerStatusInterval', 'processTermTimeout', 'forceKillTimeout', 'startTimeout')

KNOWN = frozenset(DEFAULTS).union(OTHER_KNOWN)


def camel_key(key):
    """``worker_controller`` -> ``workerController`` for a known option; other keys unchanged."""
    camel = to_camel(key)
    return camel if camel in KNOWN else key


def merge(options):
    """The defaults overlaid with ``options`` (camelCase keys, custom keys kept)."""
    merged = dict(DEFAULTS)
    for key, value in (options or {}).items():
        merged[camel_key(key)] = value
    return merged


def _count(options, key, minimum):
    """``options[key]`` as a process count of at least ``minimum`` (None: the default, 1)."""
    value = options.get(key)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InvalidOptionsError('The %s option must be a number' % key)
    if value < minimum:
        raise InvalidOptionsError('The %s option must be at least %d, not %r' % (key, minimum, value))
    return int(value)


def misspelt_keys(options):
    """A hint for each unknown key that is close to a known one (``wrokers`` -> ``workers``)."""
    known = sorted(KNOWN.union(SERVER_DEFAULTS))
    hints = []
    for key in options:
        if key in KNOWN or key in SERVER_DEFAULTS:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            hints.append("Unknown option '%s' - did you mean '%s'?" % (key, close[0]))
    return hints


def validate(options):
    """Check and normalise merged options in place; InvalidOptionsError names the option."""
    for key in DURATIONS:
        value = options.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise InvalidOptionsError('The %s option must be a positive number of milliseconds'
                                      % key)
        if value > MAX_DURATION:
            raise InvalidOptionsError(
                'The %s value provided exceeded the maximum amount allowed' % key)
    for key in LIMITS + ('maxPayload', 'maxConnections', 'maxBrokerQueueBytes'):
        check_number(options, key, minimum=1, maximum=float('inf'), allow_none=True)
    check_number(options, 'headersTimeout', minimum=1, allow_none=True)
    if not options.get('workerController'):
        raise InvalidOptionsError(
            "Compulsory option 'workerController' was not specified - It needs to be the name "
            "of a module in controllers/ or an importable dotted name which will act as the "
            "boot controller for each worker in the cluster")
    for key in ('workerController', 'brokerController', 'workerClusterController'):
        if options.get(key) is not None and not isinstance(options[key], str):
            raise InvalidOptionsError('The %s option must be a controller name' % key)
    if options.get('wsgiApp') is not None and not (isinstance(options['wsgiApp'], str)
                                                   and options['wsgiApp']):
        raise InvalidOptionsError("The wsgiApp option must be a 'module:attr' name")
    if options.get('brokerEngine') not in LOCAL_BROKER_ENGINES + ('redis', 'simple'):
        raise InvalidOptionsError("The brokerEngine option must be 'sc-broker-cluster' (the broker "
                                  "processes), 'redis' or 'simple', not %r" % (options.get('brokerEngine'),))
    # brokers: 0 is allowed when another engine (Redis) carries pub/sub between workers
    options['brokers'] = _count(options, 'brokers',
                                1 if options.get('brokerEngine') in LOCAL_BROKER_ENGINES else 0)
    options['workers'] = _count(options, 'workers', 1)
    if options.get('environment') not in ENVIRONMENTS:
        raise InvalidOptionsError("The environment option must be 'dev' or 'prod', not %r"
                                  % (options.get('environment'),))
    port = options.get('port')
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidOptionsError('The port option must be an integer between 0 and 65535')
    metrics.validate_options(options)
    HistoryRules.from_options(options)
    PresenceRules(options.get('channelPresence'))
    dashboard.validate_options(options)
    memory.validate_options(options)
    if options.get('tcpSynBacklog') is not None and not isinstance(options['tcpSynBacklog'], int):
        raise InvalidOptionsError('The tcpSynBacklog option must be an integer')
    if options.get('protocol') not in ('http', 'https'):
        raise InvalidOptionsError("The protocol option must be 'http' or 'https'")
    if options['protocol'] == 'https':
        _validate_protocol_options(options.get('protocolOptions'))
    try:
        signal_number = getattr(signal, str(options['forceKillSignal']).upper())
    except AttributeError:
        signal_number = options['forceKillSignal']
    if not isinstance(signal_number, int):
        raise InvalidOptionsError('The forceKillSignal option must be a signal name like SIGHUP')
    return options


def _validate_protocol_options(protocol_options):
    if not isinstance(protocol_options, dict):
        raise InvalidOptionsError("The protocolOptions option is required with protocol 'https'")
    key = protocol_options.get('key')
    if protocol_options.get('passphrase') is None:
        if key:
            lines = _pem_text(key).splitlines()
            if any('ENCRYPTED' in line for line in lines[:2]):
                raise InvalidOptionsError(
                    'The supplied private key is encrypted and cannot be used without a '
                    'passphrase - Please provide a valid passphrase as a property to '
                    'protocolOptions')
        elif protocol_options.get('pfx'):
            raise InvalidOptionsError(
                'The supplied pfx certificate cannot be used without a passphrase - Please '
                'provide a valid passphrase as a property to protocolOptions')
    if not (key and protocol_options.get('cert')) and not protocol_options.get('pfx'):
        raise InvalidOptionsError(
            'The supplied protocolOptions were invalid - Please provide either a key and cert '
            'pair or a pfx certificate')
    if not (key and protocol_options.get('cert')):
        raise InvalidOptionsError(
            'The pfx protocolOption is not supported by gsc - Please provide a key and cert pair')


def _pem_text(value):
    """PEM text of ``value``: the text itself, or the content of the file it names."""
    if isinstance(value, bytes):
        value = value.decode('utf-8')
    if '-----BEGIN' in value:
        return value
    try:
        with open(value, encoding='utf-8') as f:
            return f.read()
    except OSError as exc:
        raise InvalidOptionsError('The protocolOptions file %s cannot be read: %s'
                                  % (value, exc)) from None


def generate_secrets(options):
    """Fill ``appName``, ``instanceId``, ``secretKey`` and ``authKey`` when absent."""
    if not options.get('appName'):
        options['appName'] = str(uuid.uuid4())
    if not options.get('instanceId'):
        options['instanceId'] = str(uuid.uuid4())
    if not options.get('secretKey'):
        options['secretKey'] = binascii.hexlify(os.urandom(32)).decode('ascii')
    if not (options.get('authKey') or options.get('authPrivateKey')
            or options.get('authPublicKey')):
        options['authKey'] = binascii.hexlify(os.urandom(32)).decode('ascii')
    for key in ('authKey', 'authPrivateKey', 'authPublicKey'):
        if isinstance(options.get(key), bytes):
            options[key] = options[key].decode('utf-8')
    return options


def ssl_kwargs(options):
    """pywsgi's TLS arguments for ``protocol: 'https'``: ``{'ssl_context': ...}`` or ``{}``."""
    if options.get('protocol') != 'https':
        return {}
    protocol_options = options['protocolOptions']
    context = gevent_ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # its sockets yield to the hub
    files = []
    try:
        cert = _as_file(protocol_options['cert'], files)
        key = _as_file(protocol_options['key'], files)
        context.load_cert_chain(cert, key, password=protocol_options.get('passphrase'))
        if protocol_options.get('ca'):
            for ca in _as_list(protocol_options['ca']):
                context.load_verify_locations(cadata=_pem_text(ca))
    finally:
        for path in files:
            os.unlink(path)
    return {'ssl_context': context}


def _as_list(value):
    return value if isinstance(value, (list, tuple)) else [value]


def _as_file(value, files):
    """A path for PEM ``value``: the path given, or a private temporary file with the text."""
    if isinstance(value, bytes):
        value = value.decode('utf-8')
    if '-----BEGIN' not in value:
        return value
    fd, path = tempfile.mkstemp(suffix='.pem')
    files.append(path)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(value)
    return path
