"""The worker cluster process: forks the workers, relays IPC, respawns, terminates.

It sits between the master and the workers (docs/ARCHITECTURE.md): worker messages go up
(``workerStart``, ``workerExit``, ``ready``, ``workerMessage``, errors and warnings),
master messages come down (``masterMessage`` routed by ``workerId``, ``terminate``).
Forks happen in its run loop (the main greenlet); exit watchers only queue work there.
"""

import functools
import logging
import os

import gevent

from . import controllers, metrics
from . import worker as worker_module
from ..errors import InvalidActionError, ProcessExitError
from .process import EXIT_BAD_CONTROLLER, ChildProcess, ClusterMember, Supervisor

log = logging.getLogger(__name__)


class SCWorkerCluster(ClusterMember, Supervisor):
    """The worker cluster (``worker_cluster`` in ``run(worker_cluster)``).

    Attributes: ``options``, ``workers`` (id -> :class:`~gsc.cluster.process.ChildProcess`, the
    current process of each slot), ``stopped`` (ids not respawned because their
    controller is broken), ``is_terminating``.
    """

    type = 'workerCluster'
    origin_type = 'WorkerCluster'

    def __init__(self, options, fd):
        ClusterMember.__init__(self, None, options, fd)
        Supervisor.__init__(self)
        self.workers = {}
        self.stopped = set()
        self._reported_ready = False

    def start(self):
        """Launch every worker, then run the worker cluster controller."""
        for worker_id in range(self.options['workers']):
            self.spawn_worker(worker_id)
        controllers.run('workerClusterController', self.options.get('workerClusterController'),
                        self.options['paths']['appDirPath'], self)
        self.set_ready()

    def run_until_exit(self):
        """The run loop: forks happen here."""
        self.run_loop()
        return self._exit.get()

    def exit(self, code=0):
        """End the worker cluster once its run loop is done."""
        ClusterMember.exit(self, code)
        self.stop_loop()

    # -- the workers -------------------------------------------------------------

    def spawn_worker(self, worker_id, respawn=False):
        """Fork worker ``worker_id`` (run loop only)."""
        if self.is_terminating:
            return
        # a respawn listens from its fork on, but only after the first good start: until then
        # the master's fail-fast start relies on every worker listening once its controller ran
        listener_fd = worker_module.open_listener(self.options) \
            if respawn and self._reported_ready else None
        main = functools.partial(worker_module.main, worker_id, self.options,
                                 listener_fd=listener_fd)
        child = ChildProcess('worker', worker_id, main, self.handle_worker_message,
                             self._on_worker_exit, self.options['ipcAckTimeout'], respawn,
                             self.options['appName'])
        self.workers[worker_id] = child
        self.stopped.discard(worker_id)
        try:
            child.start()
        finally:
            if listener_fd is not None:
                os.close(listener_fd)  # the worker's copy stays open
        if respawn:
            log.info('Worker %s was respawned', worker_id)

    def reap_worker(self, child):
        """Report an exited worker and respawn it when the options say so (run loop only)."""
        if self.is_terminating:
            if all(c.exited for c in self.workers.values()):
                self.exit(0)
            return
        self.send_to_parent('workerExit', {'id': child.id, 'pid': child.pid,
                                           'code': child.code, 'signal': child.signal})
        if self.workers.get(child.id) is not child:
            return
        if child.code == EXIT_BAD_CONTROLLER:
            self.stopped.add(child.id)
            log.error('Worker %s stopped: its controller failed; fix it and reboot the workers',
                      child.id)
        elif self.options['rebootWorkerOnCrash']:
            self.respawn(child, self.spawn_worker, child.id, True)

    def kill_workers(self, immediate=False):
        """Reboot the workers: each exits (gracefully unless ``immediate``) and is respawned."""
        pids = {}
        for worker_id, child in self.workers.items():
            if child.exited:
                if worker_id in self.stopped:
                    self.call_in_loop(self.spawn_worker, worker_id, True)
                continue
            pids[worker_id] = child.pid
            child.send('terminate', {'immediate': immediate})
        if not immediate and pids:
            gevent.spawn_later(self.options['forceKillTimeout'] / 1000.0, self._force_kill, pids)

    def _force_kill(self, pids):
        signal_name = self.options['forceKillSignal']
        for worker_id, pid in pids.items():
            child = self.workers.get(worker_id)
            if child is not None and child.pid == pid and child.kill(signal_name):
                self.report('error', ProcessExitError(
                    'No exit signal was received by worker with id %s (PID: %s) before '
                    'forceKillTimeout of %s ms was reached - As a result, kill signal %s was '
                    'sent to worker' % (worker_id, pid, self.options['forceKillTimeout'],
                                        signal_name)))

    def terminate(self, immediate=False):
        """Stop the whole worker cluster: every worker, then this process."""
        if self.is_terminating:
            return
        self.is_terminating = True
        live = [c for c in self.workers.values() if not c.exited]
        if not live:
            self.exit(0)
            return
        for child in live:
            child.send('terminate', {'immediate': immediate})
        gevent.spawn_later(self.options['processTermTimeout'] / 1000.0, self._kill_remaining)

    def _kill_remaining(self):
        for child in self.workers.values():
            child.kill('SIGKILL')

    # -- messages ----------------------------------------------------------------

    def send_to_parent(self, type_, data=None, callback=None, **fields):
        """Send a message to the master."""
        self.channel.send(type_, data, callback, **fields)

    def handle_worker_message(self, child, message, respond):
        """A message of a worker: counted, relayed or forwarded to the master."""
        kind = message['type']
        if kind == 'ready':
            child.ready = True
            self.send_to_parent('workerStart', {'id': child.id, 'pid': child.pid,
                                                'respawn': child.respawn})
            if not self._reported_ready and all(c.ready for c in self.workers.values()) \
                    and len(self.workers) == self.options['workers']:
                self._reported_ready = True
                self.send_to_parent('ready', {'pid': self.pid})
        elif kind == 'workerMessage':
            callback = respond if message.get('cid') is not None else None
            self.send_to_parent('workerMessage', message.get('data'), callback,
                                workerId=child.id)
        elif kind in ('error', 'warning'):
            self.send_to_parent(kind, message.get('data'))
        elif kind == 'metrics':
            self.send_to_parent('metrics', message.get('data'), respond)

    def handle_parent_message(self, message, respond):
        """A message of the master: routed to a worker, or a terminate order."""
        kind = message['type']
        if kind == 'masterMessage':
            self._route(message, respond)
        elif kind == 'terminate':
            data = message.get('data') or {}
            if data.get('killClusterMaster'):
                self.terminate(bool(data.get('immediate')))
            else:
                self.kill_workers(bool(data.get('immediate')))
        elif kind == 'emit':
            for child in self.workers.values():
                if not child.exited:
                    child.send('emit', message.get('data'), event=message.get('event'))
        elif kind == 'metrics':
            metrics.gather_workers(self, message.get('data'), respond)

    def _route(self, message, respond):
        worker_id = message.get('workerId')
        child = self.workers.get(worker_id) if isinstance(worker_id, int) else None
        if child is None or child.exited:
            err = InvalidActionError('Cannot send message to worker with id %s because the '
                                     'worker does not exist' % (worker_id,))
            self.report('error', err)
            respond(err, None)
            return
        callback = respond if message.get('cid') is not None else None
        child.send('masterMessage', message.get('data'), callback)

    def _on_worker_exit(self, child):
        self.call_in_loop(self.reap_worker, child)


def main(options, fd):
    """Entry point of the forked worker cluster process; returns its exit code."""
    return SCWorkerCluster(options, fd).serve()
