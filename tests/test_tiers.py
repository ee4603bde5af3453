"""Every test file is in exactly one tier of conftest.TIERS, and every test gets that tier's
marker (so ``pytest -m core`` and the other tiers together run the whole suite once)."""

import os

import pytest

from conftest import ROOT, TIERS, pytest_collection_modifyitems, tiers_of

TESTS = os.path.join(ROOT, 'tests')


def test_every_test_file_is_in_exactly_one_tier():
    files = sorted(name for name in os.listdir(TESTS)
                   if name.startswith('test_') and name.endswith('.py'))
    wrong = {name: tiers_of(name) for name in files if len(tiers_of(name)) != 1}
    assert wrong == {}, 'list each in exactly one tier of TIERS in tests/conftest.py'
    listed = sorted(name for names in TIERS.values() for name in names)
    assert listed == files, 'TIERS names files that do not exist: %s' % (set(listed) - set(files))


class FakeItem:
    def __init__(self, name):
        self.path = os.path.join(TESTS, name)
        self.markers = []

    def add_marker(self, marker):
        self.markers.append(marker)


def test_each_test_gets_its_files_tier_and_a_file_in_no_tier_stops_the_run_naming_it():
    known, new = FakeItem('test_protocol.py'), FakeItem('test_brand_new.py')
    with pytest.raises(pytest.UsageError, match=r'tests/test_brand_new\.py is in no tier'):
        pytest_collection_modifyitems(None, [known, new])
    assert known.markers == ['core'] and new.markers == []
    pytest_collection_modifyitems(None, [known])
    assert known.markers == ['core', 'core']
