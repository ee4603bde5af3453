"""Worker controller of the master tests: answers commands sent with send_to_worker."""

import os
import signal
import time

import gevent

from gsc.errors import SCError, dehydrate


def custom_error(name, message):
    err = SCError(message)
    err.name = name
    return err


def run(worker):
    """Answer master messages the way SocketCluster's test worker does, plus test commands."""

    def report(tag, err, data):
        worker.send_to_master({'report': tag, 'err': dehydrate(err), 'data': data})

    def on_master_message(data, respond):
        data = data or {}
        if data.get('fail'):
            respond(custom_error('MyCustomWorkerError', 'This is an error from worker'))
        elif data.get('doNothing'):
            pass
        elif 'ask' in data:
            callback = (lambda err, answer: report(data['tag'], err, answer)) \
                if data.get('callback') else None
            worker.send_to_master(data['ask'], callback)
            respond(None, 'asked')
        elif data.get('emitError'):
            respond(None, 'ok')
            worker.emit('error', custom_error('WorkerTestError', 'error from worker'))
        elif data.get('emitWarning'):
            respond(None, 'ok')
            worker.emit('warning', custom_error('WorkerTestWarning', 'warning from worker'))
        elif data.get('uncaught'):
            respond(None, 'ok')
            gevent.spawn(lambda: 1 / 0)
        elif data.get('garbage'):
            respond(None, 'ok')
            os.write(worker.channel.fd, b'\xff\xff\xff\xffgarbage')
        elif data.get('flood'):
            for i in range(data['flood']):
                worker.send_to_master({'floodItem': i})
            respond(None, 'flooded')
        elif data.get('hangOnTerm'):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            worker.on('masterMessage', lambda *a: None)
            worker.close = lambda: time.sleep(3600)
            respond(None, 'hanging')
        elif 'options' in data:
            respond(None, {key: worker.options.get(key) for key in data['options']})
        elif data.get('status'):
            respond(None, worker.get_status())
        elif data.get('whoami'):
            respond(None, {'id': worker.id, 'pid': os.getpid(), 'isLeader': worker.is_leader})
        else:
            respond(None, {'id': 1, 'name': 'TestName'})

    worker.on('masterMessage', on_master_message)
    if worker.options.get('sendOnRun'):
        worker.send_to_master({'prop': 1234},
                              lambda err, answer: report('run', err, answer))

    def on_connection(socket, status=None):
        socket.on('whoami', lambda data, respond: respond(None, os.getpid()))

    worker.on('connection', on_connection)
