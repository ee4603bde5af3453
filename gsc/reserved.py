"""Channel names reserved for gsc itself: clients may not subscribe or publish to them."""

from .errors import BrokerError

RESERVED_PREFIX = '#gsc/'
"""Internal channels (``#gsc/presence/<channel>``, ...) start with this."""

ACTIONS = {'subscribe': 'Failed to subscribe socket to the %.100s channel - reserved channel',
           'publish': 'Failed to publish to the %.100s channel - reserved channel',
           'presence': 'Failed to get the presence of the %.100s channel - reserved channel'}


def reserved_channel_error(action, channel):
    """The BrokerError refusing a client's ``action`` ('subscribe', 'publish' or 'presence') on
    ``channel`` when it is reserved; None when the client may use it."""
    if isinstance(channel, str) and channel.startswith(RESERVED_PREFIX):
        return BrokerError(ACTIONS[action] % channel)
    return None
