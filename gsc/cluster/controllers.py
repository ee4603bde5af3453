"""Controllers by name: the user code each process runs (``run(worker)``, ``run(broker)``, ...).

A name is resolved, in order, as a file path (``'app/worker.py'``), as a module of the
``controllers/`` directory next to the application (``'worker'`` ->
``<appDirPath>/controllers/worker.py``), or as any importable dotted name
(``'myapp.controllers.worker'``).  Each process imports its own controller after it
started, then calls its entry point with the process object.  The ``wsgiApp`` option
names a WSGI application the same way, followed by its attribute: ``'chat_app:app'``.
"""

import importlib
import importlib.util
import os
import sys

from ..errors import InvalidOptionsError

ENTRY_POINT = 'run'
WSGI_ATTRIBUTE = 'application'
"""The attribute of a ``wsgiApp`` named without ``:attr`` (as gunicorn and Django use)."""


class ControllerError(InvalidOptionsError):
    """A controller that cannot be found, imported or started."""

    name = 'ControllerError'


def controller_path(name, app_dir):
    """The file of controller ``name`` when it is a path or in ``controllers/``; else None."""
    if name.endswith('.py') or os.sep in name:
        return os.path.join(app_dir, name)
    candidate = os.path.join(app_dir, 'controllers', name + '.py')
    return candidate if os.path.isfile(candidate) else None


def source_path(name, app_dir):
    """The file that controller (or ``module:attr`` app) ``name`` would be loaded from; None
    when it cannot be found (loading it will say why)."""
    module = name.partition(':')[0]
    path = controller_path(module, app_dir)
    if path is not None:
        return path
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return getattr(spec, 'origin', None) if spec is not None else None


def unreadable_part(path, uid, groups):
    """The first part of ``path`` that user ``uid`` (member of ``groups``) cannot read (a
    directory it cannot enter, or the file itself); None when it can read the file."""
    parts = []
    head = os.path.abspath(path)
    while True:
        parts.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for part in reversed(parts):
        try:
            info = os.stat(part)
        except OSError:
            return part
        need = 0o4 if part == parts[0] else 0o1
        if info.st_uid == uid:
            need <<= 6
        elif info.st_gid in groups:
            need <<= 3
        if uid != 0 and not info.st_mode & need:
            return part
    return None


def check_readable_by(options, app_dir, user_entry):
    """ControllerError when a controller or the WSGI app of ``options`` cannot be read by the
    user of ``user_entry`` (a ``pwd`` entry), naming the user and the path."""
    groups = set(os.getgrouplist(user_entry.pw_name, user_entry.pw_gid))
    for option in ('workerController', 'brokerController', 'workerClusterController', 'wsgiApp'):
        name = options.get(option)
        path = source_path(name, app_dir) if name else None
        blocked = path and unreadable_part(path, user_entry.pw_uid, groups)
        if blocked:
            raise ControllerError('The %s %r cannot be read by the user %r (downgradeToUser): '
                                  'no access to %s' % (option, name, user_entry.pw_name, blocked))


def load(option, name, app_dir):
    """Import controller ``name`` (the value of option ``option``); ControllerError names both."""
    path = controller_path(name, app_dir)
    try:
        if path is None:
            if app_dir not in sys.path:
                sys.path.insert(0, app_dir)
            return importlib.import_module(name)
        module_name = 'controllers.' + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None:
            raise ImportError('%s is not a Python file' % path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise ControllerError('Failed to load %s %r - %s: %s'
                              % (option, name, type(exc).__name__, exc)) from exc


def run(option, name, app_dir, process):
    """Load controller ``name`` and call its ``run(process)``; None names no controller."""
    if not name:
        return None
    module = load(option, name, app_dir)
    entry = getattr(module, ENTRY_POINT, None)
    if not callable(entry):
        raise ControllerError('The %s %r has no %s(%s) function'
                              % (option, name, ENTRY_POINT, process.type))
    return entry(process)


def wsgi_app(name, app_dir):
    """The WSGI application ``'module:attr'`` (option ``wsgiApp``); ControllerError names it."""
    module_name, _, attribute = name.partition(':')
    module = load('wsgiApp', module_name, app_dir)
    app = getattr(module, attribute or WSGI_ATTRIBUTE, None)
    if not callable(app):
        raise ControllerError('The wsgiApp %r is not a WSGI application: %s has no callable %r'
                              % (name, module_name, attribute or WSGI_ATTRIBUTE))
    return app


def watched_files(app_dir):
    """The files whose change reboots the workers in the dev environment (controllers/*.py)."""
    folder = os.path.join(app_dir, 'controllers')
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, n) for n in sorted(names) if n.endswith('.py')]
