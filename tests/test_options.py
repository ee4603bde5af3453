"""Options of the master: defaults, snake_case spellings, validation (X-41), the singleton."""

import pytest

from gsc import SocketCluster
from gsc.cluster import options as options_module
from gsc.errors import InvalidActionError

pytestmark = pytest.mark.timeout(20)


def fails_with(options):
    """The ``fail`` a master reports for ``options`` (it starts nothing)."""
    failures = []
    master = SocketCluster(options)
    master.on('fail', failures.append)
    assert master.serve_forever() is False
    assert len(failures) == 1
    assert failures[0].origin['type'] == 'Master'
    return failures[0]


@pytest.mark.parametrize('options,message', [
    ({'workerController': 'worker', 'ackTimeout': 2 ** 31},
     'The ackTimeout value provided exceeded the maximum amount allowed'),
    ({'workerController': 'worker', 'ipc_ack_timeout': 2 ** 31},
     'The ipcAckTimeout value provided exceeded the maximum amount allowed'),
    ({}, "Compulsory option 'workerController' was not specified"),
    ({'workerController': 'worker', 'brokers': '2'}, 'The brokers option must be a number'),
    ({'workerController': 'worker', 'workers': '2'}, 'The workers option must be a number'),
    ({'workerController': 'worker', 'maxPayload': 0}, 'The maxPayload option must be at least 1'),
    ({'workerController': 'worker', 'max_broker_queue_bytes': 'lots'},
     "The maxBrokerQueueBytes option must be a number, not 'lots'"),
    ({'workerController': 'worker', 'headersTimeout': -1},
     'The headersTimeout option must be at least 1'),
    ({'workerController': 'worker', 'port': 'http'}, 'The port option must be an integer'),
    ({'workerController': 'worker', 'protocol': 'https'},
     "The protocolOptions option is required with protocol 'https'"),
    ({'workerController': 'worker', 'protocol': 'https', 'protocolOptions': {}},
     'The supplied protocolOptions were invalid'),
    ({'workerController': 'worker', 'protocol': 'https', 'protocolOptions': {
        'key': '-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n', 'cert': 'x'}},
     'The supplied private key is encrypted and cannot be used without a passphrase'),
])
def test_bad_options_are_reported_as_fail(options, message):
    """X-41: bad options -> fail InvalidOptionsError naming the option (not raised)."""
    err = fails_with(options)
    assert err.name == 'InvalidOptionsError'
    assert err.message.startswith(message)


def test_singleton():
    """X-41: a second master in one process raises InvalidActionError; the slot is freed."""
    first = SocketCluster({})
    with pytest.raises(InvalidActionError) as info:
        SocketCluster({})
    assert 'singleton' in str(info.value)
    assert first.serve_forever() is False
    fails_with({})


def test_defaults_spellings_and_generated_values():
    options = options_module.merge({'worker_controller': 'w', 'my_custom_key': 1,
                                    'workers': 1})
    options_module.validate(options)
    options_module.generate_secrets(options)
    assert options['workerController'] == 'w' and options['my_custom_key'] == 1
    assert options['workers'] == 1 and options['brokers'] == 1 and options['port'] == 8000
    assert options['ipcAckTimeout'] == 10000 and options['forceKillSignal'] == 'SIGHUP'
    assert len(options['secretKey']) == 64 and len(options['authKey']) == 64
    assert len(options['appName']) == 36 and len(options['instanceId']) == 36
    options = options_module.generate_secrets(options_module.merge({'authPublicKey': 'k'}))
    assert options['authKey'] is None
