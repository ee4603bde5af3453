"""The option registry is the one table of options: the README's table is rendered from it,
every option's default passes its own check, and gsc.listen() and the master read it."""

import os

import pytest

from gsc.cluster import options as cluster_options
from gsc.core.options import CLUSTER, OPTIONS, SERVER, defaults, markdown_table, normalise_server_options

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')


def readme_table():
    """The table of the README's Options section."""
    with open(README, encoding='utf-8') as f:
        text = f.read()
    section = text[text.index('\n## Options\n'):]
    section = section[:section.index('\n## ', 1)]
    return ''.join(line + '\n' for line in section.split('\n') if line.startswith('|'))


def test_the_readme_table_is_the_registry():
    assert readme_table() == markdown_table(), (
        "README.md's options table is not gsc/core/options.py's: paste the output of "
        "python -c 'from gsc.core.options import markdown_table; print(markdown_table())'")


def test_each_option_is_defined_once():
    names = [option.name for option in OPTIONS]
    assert len(names) == len(set(names))
    assert all(option.scope in (SERVER, CLUSTER) and option.doc for option in OPTIONS)


@pytest.mark.parametrize('option', OPTIONS, ids=lambda option: option.name)
def test_every_default_passes_its_check(option):
    option.validate({option.name: option.default})
    option.validate({option.name: option.cluster_default})


def test_the_server_and_the_master_share_their_defaults():
    server = normalise_server_options({})
    master = cluster_options.merge({})
    for name, value in defaults(SERVER).items():
        expected = 'sc-broker-cluster' if name == 'brokerEngine' else value
        assert master[name] == expected, name
    assert server['socketChannelLimit'] == master['socketChannelLimit'] == 1000
    assert (server['brokerEngine'], master['brokerEngine']) == ('simple', 'sc-broker-cluster')
