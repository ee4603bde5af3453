"""A master for the process-tree tests: ``python tests/master_driver.py OPTIONS_JSON``.

Every master event is printed on stdout as one JSON line; commands arrive on stdin as
JSON lines (``send_to_worker``, ``send_to_broker``, ``kill_workers``, ``kill_brokers``,
``destroy``).  ``options['driverCommands']`` are run right after construction.
"""

import json
import logging
import os
import sys

import gevent
from gevent.fileobject import FileObjectThread

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gsc import SocketCluster  # noqa: E402
from gsc.errors import SCError, dehydrate  # noqa: E402

EVENTS = ('ready', 'workerStart', 'workerExit', 'workerClusterStart', 'workerClusterReady',
          'workerClusterExit', 'brokerStart', 'brokerExit')


def out(obj):
    sys.stdout.write(json.dumps(obj, default=str) + '\n')
    sys.stdout.flush()


def error_fields(err):
    if err is None:
        return None
    fields = dehydrate(err, include_stack=True)
    return fields if isinstance(fields, dict) else {'message': str(fields)}


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(process)d %(message)s')
    options = json.loads(sys.argv[1])
    commands = options.pop('driverCommands', [])
    master = SocketCluster(options)

    for name in EVENTS:
        master.on(name, (lambda name: lambda data=None: out(
            {'event': name, 'data': {k: v for k, v in (data or {}).items()
                                     if k != 'childProcess'}}))(name))
    for name in ('fail', 'warning'):
        master.on(name, (lambda name: lambda err: out(
            dict(error_fields(err), event=name)))(name))

    def on_message(kind):
        def handler(source_id, data, respond):
            out({'event': kind, 'id': source_id, 'data': data})
            if isinstance(data, dict) and data.get('fail'):
                err = SCError('Failure from master')
                err.name = 'MasterFailureError'
                respond(err)
            elif isinstance(data, dict) and data.get('prop') == 1234:
                respond(None, {'qwerty': 123456})
        return handler
    master.on('workerMessage', on_message('workerMessage'))
    master.on('brokerMessage', on_message('brokerMessage'))

    def execute(command):
        cmd = command['cmd']
        tag = command.get('tag')

        def callback(err, data, target_id):
            out({'event': 'callback', 'tag': tag, 'err': error_fields(err), 'data': data,
                 'target': target_id})
        cb = callback if command.get('callback', True) else None
        if cmd == 'send_to_worker':
            master.send_to_worker(command['id'], command.get('data'), cb)
        elif cmd == 'send_to_broker':
            master.send_to_broker(command['id'], command.get('data'), cb)
        elif cmd == 'kill_workers':
            master.kill_workers(command.get('options'))
        elif cmd == 'kill_brokers':
            master.kill_brokers()
        elif cmd == 'destroy':
            master.destroy(lambda: out({'event': 'destroyed'}))

    for command in commands:
        execute(command)

    def read_commands():
        stdin = FileObjectThread(sys.stdin, 'r')
        for line in stdin:
            if line.strip():
                execute(json.loads(line))
    gevent.spawn(read_commands)
    ok = master.serve_forever()
    out({'event': 'exit', 'ok': ok})


if __name__ == '__main__':
    main()
