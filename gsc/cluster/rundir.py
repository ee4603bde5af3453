"""The private directory of a run: where the brokers' unix sockets live.

Every run gets its own directory, ``<base>/<master pid>-<appName>``, mode 0700, owned by
the user the children run as.  The base is ``socketRoot`` when given, else
``$XDG_RUNTIME_DIR/gsc`` (when the children run as the current user and that directory
is the user's own), else ``<temp dir>/gsc-<uid>``.  A base that exists is used only when it
is a real directory (not a symlink) of that user that nobody else may write or enter;
anything else is refused, so another local user cannot plant a socket or a symlink there.
Directories of runs whose master is gone are removed at start; removal never follows a
symlink.
"""

import errno
import os
import re
import shutil
import stat
import tempfile

from ..errors import InvalidActionError

_RUN_NAME = re.compile(r'^(\d+)-')
MAX_SOCKET_PATH = 107
"""The longest unix socket path Linux takes (sun_path is 108 bytes with its NUL)."""
SOCKET_NAME_ROOM = len('/b9999')


def base_dir(socket_root, uid):
    """The base directory of the runs of a user ``uid`` (see the module docstring)."""
    if socket_root:
        return os.path.abspath(socket_root)
    runtime = os.environ.get('XDG_RUNTIME_DIR')
    if runtime and uid == os.getuid() and os.path.isabs(runtime):
        return os.path.join(runtime, 'gsc')
    return os.path.join(tempfile.gettempdir(), 'gsc-%d' % uid)


def run_dir(base, app_name, pid):
    """The directory of one run (no trailing slash)."""
    return os.path.join(base, '%d-%s' % (pid, re.sub(r'[^\w.-]', '_', app_name)[:12]))


def ensure_private(path, uid, gid):
    """Create ``path`` with mode 0700 for ``uid``, or check that the one there is private to
    it; InvalidActionError naming the path and the problem otherwise."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        if (uid, gid) != (os.getuid(), os.getgid()):
            os.chown(path, uid, gid)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = 'it is not a directory of its own (a symlink or a file)'
    elif info.st_uid != uid:
        problem = 'it is owned by uid %d, not %d' % (info.st_uid, uid)
    elif info.st_mode & 0o077:
        problem = 'its mode is %s: others may enter it' % oct(info.st_mode & 0o777)
    else:
        return
    raise InvalidActionError('Refusing the socket directory %s: %s - remove it or choose another '
                             'socketRoot' % (path, problem))


def master_alive(pid):
    """True while process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(base):
    """Remove the run directories in ``base`` whose master is gone; their names."""
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        match = _RUN_NAME.match(name)
        if match and not master_alive(int(match.group(1))):
            remove_tree(os.path.join(base, name))
            removed.append(name)
    return removed


def remove_tree(path):
    """Remove the directory ``path`` and what it holds, never following a symlink: a symlink
    (even written with a trailing slash) is unlinked, not its target emptied."""
    path = path.rstrip(os.sep) or path
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            os.unlink(path)
            return
    except FileNotFoundError:
        return
    try:
        shutil.rmtree(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def create(socket_root, app_name, pid, uid, gid):
    """The run directory for master ``pid``, created empty and private (0700, owned by
    ``uid``); stale runs of the same base removed first."""
    base = base_dir(socket_root, uid)
    path = run_dir(base, app_name, pid)
    if len(os.fsencode(path)) + SOCKET_NAME_ROOM > MAX_SOCKET_PATH:
        raise InvalidActionError('The socket directory %s is too long for unix socket paths '
                                 '(%d bytes at most) - choose a shorter socketRoot'
                                 % (path, MAX_SOCKET_PATH))
    ensure_private(base, uid, gid)
    remove_stale(base)
    remove_tree(path)
    ensure_private(path, uid, gid)
    return path
