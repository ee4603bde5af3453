"""gsc.core.history.ChannelPositions: an engine's resync of its history channels after a lost
link delivers each publication once, in order, and reports a gap history cannot fill."""

from gsc.core.history import HOLD_LIMIT, ChannelPositions


def made():
    delivered, reports = [], []
    positions = ChannelPositions(lambda channel, data, position: delivered.append((data, position)),
                                 lambda channel, report: reports.append(report))
    positions.track('room')
    return positions, delivered, reports


def result(epoch, offsets, latest=None, recovered=True):
    return {'epoch': epoch, 'offset': latest if latest is not None else (offsets[-1] if offsets else 0),
            'recovered': recovered, 'publications': [{'offset': o, 'data': o} for o in offsets]}


def test_live_publications_pass_once_in_their_epoch():
    positions, delivered, _ = made()
    for offset in (1, 2, 2, 1, 3):
        positions.message('room', offset, (offset, 'e1'))
    positions.message('room', 'new', (1, 'e2'))
    positions.message('other', 'untracked', (1, 'e1'))
    assert [data for data, _ in delivered] == [1, 2, 3, 'new', 'untracked']


def test_a_resync_reads_the_new_epoch_whole_then_the_held_live_ones_without_duplicates():
    positions, delivered, reports = made()
    positions.message('room', 'old', (7, 'e1'))
    token = positions.hold('room')
    assert positions.first_read('room') == (7, 'e1')
    for offset in (3, 4, 5):  # live while the reads are under way
        positions.message('room', offset, (offset, 'e2'))
    assert delivered == [('old', (7, 'e1'))]
    first = result('e2', [], latest=3, recovered=False)
    assert positions.next_read('e1', first) == (0, 'e2')
    last = result('e2', [1, 2, 3, 4])
    assert positions.next_read('e2', last) is None
    positions.finish('room', token, None, last)
    assert [position for _, position in delivered[1:]] == [(n, 'e2') for n in range(1, 6)]
    assert not reports
    positions.message('room', 6, (6, 'e2'))
    assert delivered[-1] == (6, (6, 'e2'))


def test_a_channel_never_delivered_is_read_from_the_start_of_the_owners_epoch():
    positions, _, _ = made()
    positions.hold('room')
    since, epoch = positions.first_read('room')
    assert (since, epoch) == (0, '')
    assert positions.next_read(epoch, result('e9', [1])) == (0, 'e9')


def test_a_gap_history_lost_is_reported_and_the_held_ones_still_delivered():
    positions, delivered, reports = made()
    positions.message('room', 'a', (1, 'e1'))
    token = positions.hold('room')
    positions.message('room', 'live', (250, 'e2'))
    positions.finish('room', token, None, result('e2', [], latest=249, recovered=False))
    assert delivered[-1] == ('live', (250, 'e2'))
    assert reports == [{'channel': 'room', 'recovered': False, 'epoch': 'e2', 'offset': 249, 'missed': 0}]


def test_a_failed_read_and_an_overflow_are_reported_with_an_error():
    positions, _, reports = made()
    token = positions.hold('room')
    positions.finish('room', token, RuntimeError('unreachable'))
    token = positions.hold('room')
    for offset in range(1, HOLD_LIMIT + 2):
        positions.message('room', offset, (offset, 'e2'))
    positions.finish('room', token, None, result('e2', []))
    assert [report['error'] for report in reports] == [
        'unreachable', 'too many live publications arrived during the recovery']
    assert all(report['epoch'] is None and report['recovered'] is False for report in reports)


def test_a_stale_resync_does_nothing():
    positions, delivered, reports = made()
    stale = positions.hold('room')
    fresh = positions.hold('room')  # the link was lost again and is back
    positions.finish('room', stale, None, result('e2', [1]))
    assert not delivered and not reports
    positions.finish('room', fresh, None, result('e2', [1]))
    assert delivered == [(1, (1, 'e2'))]
    positions.forget('room')
    positions.finish('room', fresh, None, result('e2', [2]))
    assert len(delivered) == 1


def test_a_resync_keeps_a_publication_without_data_without_it():
    """A publication read back without ``data`` (JavaScript's undefined) stays UNDEFINED."""
    from gsc.core.protocol import UNDEFINED
    positions, delivered, _ = made()
    positions.message('room', 'old', (1, 'e1'))
    token = positions.hold('room')
    read = {'epoch': 'e1', 'offset': 3, 'recovered': True,
            'publications': [{'offset': 2}, {'offset': 3, 'data': None}]}
    positions.finish('room', token, None, read)
    assert delivered[1:] == [(UNDEFINED, (2, 'e1')), (None, (3, 'e1'))]
