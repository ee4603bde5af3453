"""The options of a SocketCluster: the registry's (:mod:`gsc.core.options`) merged, checked
together, and the values the master derives from them.

Keys are SocketCluster's camelCase names (https://socketcluster.io/docs/14.4.2/api-socketcluster);
snake_case spellings of the known keys are accepted and turned into camelCase; any other key is
kept as given and reaches every process unchanged.
"""

import binascii
import difflib
import os
import ssl
import tempfile
import uuid

from gevent import ssl as gevent_ssl

from . import dashboard, metrics
from ..core.options import BY_NAME, CLUSTER, OPTIONS, defaults, to_camel
from ..errors import InvalidOptionsError

LOCAL_BROKER_ENGINES = ('sc-broker-cluster', 'broker')
"""The engine names meaning "the cluster's own broker processes" (SocketCluster's default)."""


def camel_key(key):
    """``worker_controller`` -> ``workerController`` for a known option; other keys unchanged."""
    camel = to_camel(key)
    return camel if camel in BY_NAME else key


def merge(options):
    """The master's defaults overlaid with ``options`` (camelCase keys, custom keys kept)."""
    merged = defaults(CLUSTER)
    for key, value in (options or {}).items():
        merged[camel_key(key)] = value
    return merged


def _count(options, key, minimum):
    """``options[key]`` (checked by the registry) as a process count of at least ``minimum``
    (None: the default, 1)."""
    value = options.get(key)
    if value is None:
        return 1
    if value < minimum:
        raise InvalidOptionsError('The %s option must be at least %d, not %r' % (key, minimum, value))
    return int(value)


def misspelt_keys(options):
    """A hint for each unknown key that is close to a known one (``wrokers`` -> ``workers``)."""
    known = sorted(BY_NAME)
    hints = []
    for key in options:
        if key in BY_NAME:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            hints.append("Unknown option '%s' - did you mean '%s'?" % (key, close[0]))
    return hints


def validate(options):
    """Check and normalise merged options in place: each option by the registry, then the
    checks between options; InvalidOptionsError names the option."""
    for option in OPTIONS:
        option.validate(options)
    if not options.get('workerController'):
        raise InvalidOptionsError(
            "Compulsory option 'workerController' was not specified - It needs to be the name "
            "of a module in controllers/ or an importable dotted name which will act as the "
            "boot controller for each worker in the cluster")
    # brokers: 0 is allowed when another engine (Redis) carries pub/sub between workers
    options['brokers'] = _count(options, 'brokers',
                                1 if options.get('brokerEngine') in LOCAL_BROKER_ENGINES else 0)
    options['workers'] = _count(options, 'workers', 1)
    metrics.validate_options(options)
    dashboard.validate_options(options)
    if options['protocol'] == 'https':
        _validate_protocol_options(options.get('protocolOptions'))
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
