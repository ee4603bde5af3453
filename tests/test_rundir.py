"""The private process tree on disk: each run's socket directory is 0700 and the user's own; a
directory planted by someone else is refused; stale runs are removed; removal never follows
a symlink."""

import os
import pwd
import stat

import pytest

from gsc.cluster import rundir
from master_harness import MasterProcess, free_port

pytestmark = pytest.mark.timeout(60)
OPTIONS = {'workers': 1, 'brokers': 1, 'workerController': 'tests.controllers.pubsub_worker'}


def start(request, root, **options):
    master = MasterProcess(dict(OPTIONS, port=free_port(), socketRoot=str(root), **options))
    request.addfinalizer(master.cleanup)
    return master


def test_a_run_has_a_private_directory_removed_at_stop(request, tmp_path):
    root = tmp_path / 'root'
    master = start(request, root)
    master.ready()
    runs = os.listdir(root)
    assert len(runs) == 1 and runs[0].startswith('%d-' % master.pid)
    for path in (root, root / runs[0]):
        info = os.lstat(path)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert os.listdir(root / runs[0]) == ['b0']
    assert master.stop() == 0
    assert os.listdir(root) == []


@pytest.mark.parametrize('plant,problem', [
    ('open', "its mode is 0o777: others may enter it"),
    ('symlink', 'it is not a directory of its own (a symlink or a file)'),
    pytest.param('foreign', 'it is owned by uid', marks=pytest.mark.skipif(
        os.geteuid() != 0, reason='giving a directory to another user needs root')),
])
def test_a_planted_socket_root_is_refused(request, tmp_path, plant, problem):
    root = tmp_path / 'root'
    if plant == 'symlink':
        (tmp_path / 'elsewhere').mkdir(mode=0o700)
        root.symlink_to(tmp_path / 'elsewhere')
    else:
        root.mkdir()
        root.chmod(0o777 if plant == 'open' else 0o700)
        if plant == 'foreign':
            os.chown(root, pwd.getpwnam('nobody').pw_uid, -1)
    master = start(request, root)
    fail = master.expect('fail', timeout=10)
    assert fail['message'].startswith('Refusing the socket directory %s: %s' % (root, problem))
    master.proc.wait(10)


def test_stale_runs_are_removed_and_symlinks_never_followed(request, tmp_path):
    root = tmp_path / 'root'
    root.mkdir(mode=0o700)
    dead = 2 ** 22 + 12345  # above pid_max's default: no process has it
    (root / ('%d-old' % dead)).mkdir()
    (root / ('%d-old' % dead) / 'b0').write_text('')
    victim = tmp_path / 'victim'
    victim.mkdir()
    (victim / 'precious').write_text('keep me')
    (root / ('%d-trap' % (dead + 1))).symlink_to(victim)
    master = start(request, root)
    master.ready()
    assert [name for name in os.listdir(root) if not name.startswith('%d-' % master.pid)] == []
    assert (victim / 'precious').read_text() == 'keep me'


def test_remove_tree_unlinks_a_symlink_written_with_a_trailing_slash(tmp_path):
    victim = tmp_path / 'victim'
    victim.mkdir()
    (victim / 'precious').write_text('keep me')
    link = tmp_path / 'link'
    link.symlink_to(victim)
    rundir.remove_tree(str(link) + '/')
    assert not os.path.lexists(link)
    assert (victim / 'precious').read_text() == 'keep me'
