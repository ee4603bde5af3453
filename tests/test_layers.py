"""The layers of gsc point one way: every import inside gsc/ goes to a lower layer or stays
in its own group (README.md, Layout).

    0  core       gsc.errors, gsc.version, gsc.core.*  sans-I/O: protocol, codec, option registry
    1  shared     gsc.transport, gsc.gevent_internals, gsc.reporting, gsc.logs
    2  engines    gsc.engines.*                        pub/sub under the exchange
    3  server     gsc.server.*                         the realtime server (gsc.listen, attach)
    3  client     gsc.client                           the Python client
    4  cluster    gsc.cluster.*                        the process tree and its options
    5  top        gsc, gsc.__main__, gsc.cli, gsc.scaffold

Two groups of one rank (the server and the client) do not import each other.
"""

import ast
import os

import pytest

GSC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'gsc')

LAYERS = (
    # (rank, group, module prefixes: a name itself or a package and everything in it)
    (0, 'core', ('gsc.errors', 'gsc.version', 'gsc.core')),
    (1, 'shared', ('gsc.transport', 'gsc.gevent_internals', 'gsc.reporting', 'gsc.logs')),
    (2, 'engines', ('gsc.engines',)),
    (3, 'server', ('gsc.server',)),
    (3, 'client', ('gsc.client',)),
    (4, 'cluster', ('gsc.cluster',)),
    (5, 'top', ('gsc', 'gsc.__main__', 'gsc.cli', 'gsc.scaffold')),
)


def layer(module):
    """``(rank, group)`` of a gsc module: its longest matching prefix in LAYERS."""
    best = None
    for rank, group, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + '.')) and (
                    best is None or len(prefix) > len(best[0])):
                best = (prefix, rank, group)
    if best is None:
        raise LookupError('%s is in no layer: add it to LAYERS and to the README' % module)
    return best[1], best[2]


def modules():
    """``{module name: path}`` of every Python file under gsc/."""
    found = {}
    for root, _dirs, files in os.walk(GSC):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, os.path.dirname(GSC))[:-3].split(os.sep)
                if parts[-1] == '__init__':
                    parts.pop()
                found['.'.join(parts)] = path
    return found


def imported(module, path):
    """``(line, name)`` of every gsc module that ``module`` imports, anywhere in its file
    (``from . import x`` names ``x`` when it is a module, else the package)."""
    known = modules()
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == 'gsc' or alias.name.startswith('gsc.'):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if not (target == 'gsc' or target.startswith('gsc.')):
                continue
            for alias in node.names:
                child = target + '.' + alias.name
                yield node.lineno, child if child in known else target


def violations(module, path):
    """The imports of ``module`` against the order, as readable lines."""
    rank, group = layer(module)
    found = []
    for line, target in imported(module, path):
        if target == module:
            continue
        target_rank, target_group = layer(target)
        if target_group != group and target_rank >= rank:
            found.append('%s:%d imports %s (%s, layer %d) from %s (layer %d)'
                         % (os.path.relpath(path, os.path.dirname(GSC)), line, target,
                            target_group, target_rank, group, rank))
    return found


def test_every_module_has_a_layer():
    for module in modules():
        layer(module)


@pytest.mark.parametrize('module', sorted(modules()))
def test_imports_point_down(module):
    assert violations(module, modules()[module]) == []


def test_an_upward_import_is_caught(tmp_path):
    """The walk sees relative and absolute imports, also inside functions."""
    path = tmp_path / 'probe.py'
    path.write_text('from ..server.scserver import SCServer\n'
                    'def late():\n    import gsc.cluster.master\n')
    assert len(violations('gsc.core.probe', str(path))) == 2
    assert violations('gsc.cluster.probe', str(path)) == []
