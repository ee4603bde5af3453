"""Options that apply per channel pattern (``channelHistory``, ``channelPresence``).

Such an option maps fnmatch patterns (``fnmatch.fnmatchcase``: ``*`` also crosses ``/``) to
a dict of settings; the first matching pattern in dict order gives a channel its policy, and
gsc's own ``#gsc/`` channels never have one.
"""

import fnmatch
import re
from typing import Optional

from ..errors import InvalidOptionsError
from .reserved import RESERVED_PREFIX


class ChannelRules:
    """A per-pattern option compiled: ``policy(channel)`` is the policy of the first matching
    pattern, or None.  A subclass names the option (``option_name``), its settings with their
    defaults (``defaults``), and turns one pattern's settings into a policy
    (``make_policy(pattern, settings)``, raising with :meth:`invalid`).  A bad option raises
    InvalidOptionsError naming the option, the pattern and the key."""

    option_name: Optional[str] = None
    defaults: dict = {}

    def __init__(self, option=None):
        if option is None:
            option = {}
        if not isinstance(option, dict):
            raise InvalidOptionsError('The %s option must be a dict of channel patterns, not %r'
                                      % (self.option_name, option))
        self._rules = []
        for pattern, spec in option.items():
            if not isinstance(pattern, str) or not pattern:
                raise self.invalid(pattern, 'a pattern must be a non-empty string, not %r' % (pattern,))
            self._rules.append((re.compile(fnmatch.translate(pattern)).match,
                                self.make_policy(pattern, self._settings(pattern, spec))))

    def _settings(self, pattern, spec):
        """The settings of one pattern: ``spec`` (None or True: all defaults) over the defaults."""
        if spec is None or spec is True:
            spec = {}
        if not isinstance(spec, dict):
            raise self.invalid(pattern, '%r must map to a dict like %r, not %r'
                               % (pattern, self.defaults, spec))
        unknown = sorted(set(spec) - set(self.defaults))
        if unknown:
            raise self.invalid(pattern, '%r has unknown keys %s (known: %s)'
                               % (pattern, ', '.join(unknown), ', '.join(self.defaults)))
        return dict(self.defaults, **spec)

    def invalid(self, pattern, text):
        """The InvalidOptionsError of a bad setting: ``The channelX option: <text>``."""
        return InvalidOptionsError('The %s option: %s' % (self.option_name, text))

    def make_policy(self, pattern, settings):
        """The policy of one pattern's checked ``settings``."""
        raise NotImplementedError

    def __bool__(self):
        return bool(self._rules)

    def policy(self, channel):
        """The policy of ``channel``, or None (no pattern matches, or a reserved channel)."""
        if not self._rules or not isinstance(channel, str) or channel.startswith(RESERVED_PREFIX):
            return None
        for match, policy in self._rules:
            if match(channel):
                return policy
        return None
