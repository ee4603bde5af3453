"""``python -m gsc`` and the ``gsc`` command: gevent's monkey patching, then :mod:`gsc.cli`
with the current directory as the application's directory (its ``controllers/``)."""

from gevent import monkey

monkey.patch_all(os=False, signal=False)

import sys  # noqa: E402

from gsc.cli import main as _cli_main  # noqa: E402


def main():
    """The console entry point."""
    return _cli_main(prog='gsc')


if __name__ == '__main__':
    sys.exit(main())
