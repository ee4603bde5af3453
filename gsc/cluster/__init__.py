"""The process tree: the master, the worker cluster, the workers and the brokers.

- :mod:`~gsc.cluster.master`: SocketCluster, the master process.
- :mod:`~gsc.cluster.workercluster`: the worker cluster process (forks, relays, respawns workers).
- :mod:`~gsc.cluster.worker`: the worker process (an HTTP server with an SCServer).
- :mod:`~gsc.cluster.broker`: the broker process; :mod:`~gsc.cluster.brokerserver`: what it serves;
  :mod:`~gsc.cluster.brokerclient`: the worker's links to the brokers (its pub/sub engine).
- :mod:`~gsc.cluster.process`: forked children and their supervision.
- :mod:`~gsc.cluster.ipc`: the framed links between processes.
- :mod:`~gsc.cluster.rundir`: the private run directory of the brokers' sockets.
- :mod:`~gsc.cluster.controllers`: the user code each process runs, by name.
- :mod:`~gsc.cluster.metrics`: health and metrics; :mod:`~gsc.cluster.dashboard`: the live dashboard.
- :mod:`~gsc.cluster.memory`: memory given back after a mass close.
"""
