"""Which live blocks keep the small-object arenas a peak left: ``bench/many_idle.py --trace``.

CPython's small-object allocator (pymalloc) unmaps an arena (1 MiB, resident once used) only
when every block in it is free, so after a mass close a handful of blocks allocated during
the peak keep whole arenas.  This census finds them from outside the process, reading
``/proc/PID/mem`` (same user), so that counting allocates nothing in the process counted:
for each anonymous read-write range that was not mapped at the baseline, the pools (16 KiB)
in use, their allocated blocks (the carved part of the pool minus its free list), and for
each block the type its object header names (from :func:`type_names`, written by the
process itself) or else its size class (``raw128``: a dict's keys table, a list's items, ...).

The pool header layout is CPython 3.10-3.12's on 64-bit Linux (``Objects/obmalloc.c``); a
false match only miscounts, nothing is written.  Diagnosis only, never imported by gsc.
"""

import collections
import struct
import sys

POOL_SIZE = 16384
POOL_HEADER = struct.Struct('QQQQIIII')  # count, freeblock, nextpool, prevpool, arenaindex,
POOL_OVERHEAD = 48                        # szidx, nextoffset, maxnextoffset
ALIGNMENT = 16
SIZE_CLASSES = 32
GC_HEADER = 16
EXAMPLES = 3


def supported():
    """True where the pool layout above is the running CPython's."""
    return (sys.implementation.name == 'cpython' and (3, 10) <= sys.version_info[:2] <= (3, 12)
            and sys.maxsize > 2 ** 32 and sys.platform.startswith('linux'))


def type_names():
    """``{id(type): name}`` of every class alive in this process (run it in the process counted)."""
    import gc
    names, stack = {}, [object]
    while stack:
        cls = stack.pop()
        if id(cls) not in names:
            names[id(cls)] = cls.__name__
            stack.extend(type.__subclasses__(cls))
    for obj in gc.get_objects():
        names.setdefault(id(type(obj)), type(obj).__name__)
    return names


def anonymous_ranges(pid):
    """The anonymous read-write mappings of ``pid`` as ``(start, end)``."""
    ranges = []
    with open('/proc/%d/maps' % pid) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 5 and fields[1].startswith('rw'):
                start, end = (int(x, 16) for x in fields[0].split('-'))
                ranges.append((start, end))
    return ranges


def new_ranges(baseline, now):
    """The parts of the ranges ``now`` that no range of ``baseline`` covers."""
    new = []
    for start, end in now:
        pieces = [(start, end)]
        for old_start, old_end in baseline:
            pieces = [part for piece in pieces for part in _minus(piece, old_start, old_end)]
        new.extend(pieces)
    return new


def _minus(piece, start, end):
    low, high = piece
    if end <= low or start >= high:
        return [piece]
    return [part for part in ((low, start), (end, high)) if part[0] < part[1]]


def census(pid, ranges, names):
    """Count the allocated blocks of the pools in ``ranges`` of ``pid``: ``(blocks per range,
    Counter of kinds, {kind: examples})``; a kind is a type name or ``raw<size>``."""
    per_range, kinds, examples = [], collections.Counter(), collections.defaultdict(list)
    with open('/proc/%d/mem' % pid, 'rb', 0) as mem:
        for start, end in ranges:
            blocks = 0
            pool = -(-start // POOL_SIZE) * POOL_SIZE
            while pool + POOL_SIZE <= end:
                mem.seek(pool)
                data = mem.read(POOL_SIZE)
                for offset, size in _allocated_blocks(pool, data):
                    kind, example = _describe(data, offset, size, names)
                    blocks += 1
                    kinds[kind] += 1
                    if len(examples[kind]) < EXAMPLES:
                        examples[kind].append(example)
                pool += POOL_SIZE
            per_range.append(blocks)
    return per_range, kinds, examples


def _allocated_blocks(pool, data):
    """``(offset, size)`` of each allocated block of a pool in use (none for a free pool)."""
    count, freeblock, _, _, _, szidx, nextoffset, _ = POOL_HEADER.unpack_from(data)
    if not count or szidx >= SIZE_CLASSES or not POOL_OVERHEAD <= nextoffset <= POOL_SIZE:
        return
    size = (szidx + 1) * ALIGNMENT
    free = set()
    while pool <= freeblock < pool + POOL_SIZE and len(free) < POOL_SIZE // ALIGNMENT:
        free.add(freeblock - pool)
        freeblock = struct.unpack_from('Q', data, freeblock - pool)[0]
    for offset in range(POOL_OVERHEAD, min(nextoffset, POOL_SIZE - size + 1), size):
        if offset not in free:
            yield offset, size


def _describe(data, offset, size, names):
    """A block's kind (its type's name, the type found after a GC header or not) and an
    example (a str's first characters, a small int's value, else the first bytes in hex)."""
    for header in (0, GC_HEADER):
        if header + 16 <= size:
            name = names.get(struct.unpack_from('Q', data, offset + header + 8)[0])
            if name is not None:
                base = offset + header
                if name == 'str':
                    length = struct.unpack_from('q', data, base + 16)[0]
                    return name, data[base + 48:base + 48 + min(length, 60)]
                if name == 'int' and abs(struct.unpack_from('q', data, base + 16)[0]) == 1:
                    return name, struct.unpack_from('I', data, base + 24)[0]  # one 30-bit digit
                return name, data[offset:offset + 32].hex()
    return 'raw%d' % size, data[offset:offset + 32].hex()


def report(pid, baseline, names, top=12):
    """Lines describing the blocks that keep the ranges new since ``baseline``."""
    ranges = new_ranges(baseline, anonymous_ranges(pid))
    per_range, kinds, examples = census(pid, ranges, names)
    lines = ['%d ranges (%d KiB) mapped since the baseline; live blocks in each: %s'
             % (len(ranges), sum(end - start for start, end in ranges) // 1024, per_range)]
    for kind, count in kinds.most_common(top):
        lines.append('  %5d %s e.g. %s' % (count, kind, examples[kind]))
    return lines
