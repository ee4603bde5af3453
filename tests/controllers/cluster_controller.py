"""Worker cluster controller of the supervision tests: reports that it ran, with the workers' count."""

from gsc.errors import SCError


def run(worker_cluster):
    """Tell the master (as a warning) that ``run(worker_cluster)`` was called."""
    err = SCError('worker cluster controller ran with %d workers' % worker_cluster.options['workers'])
    err.name = 'ClusterControllerRan'
    worker_cluster.report('warning', err)
