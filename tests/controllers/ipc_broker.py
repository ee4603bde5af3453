"""Broker controller of the master tests (SocketCluster's broker2.js)."""

import os

from gsc.errors import SCError, dehydrate


def run(broker):
    """Answer master messages; ask the master from run() when the options say so."""

    def on_master_message(data, respond):
        data = data or {}
        if data.get('fail'):
            err = SCError('This is an error from broker')
            err.name = 'MyCustomBrokerError'
            respond(err)
        elif data.get('doNothing'):
            pass
        elif 'ask' in data:
            callback = (lambda err, answer: broker.send_to_master(
                {'report': data['tag'], 'err': dehydrate(err), 'data': answer})) \
                if data.get('callback') else None
            broker.send_to_master(data['ask'], callback)
            respond(None, 'asked')
        elif 'options' in data:
            respond(None, {key: broker.options.get(key) for key in data['options']})
        elif data.get('whoami'):
            respond(None, {'id': broker.id, 'pid': os.getpid(), 'instanceId': broker.instance_id})
        else:
            respond(None, {'id': 1, 'name': 'TestName'})

    broker.on('masterMessage', on_master_message)
    if broker.options.get('sendOnRun'):
        broker.send_to_master({'prop': 1234}, lambda err, answer: broker.send_to_master(
            {'report': 'run', 'err': dehydrate(err), 'data': answer}))
