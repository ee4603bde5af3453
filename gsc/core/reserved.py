"""Channel names reserved for gsc itself (``#gsc/...``): a client may neither subscribe nor
publish to them, except a dashboard viewer (a socket whose auth token carries
``gscDashboard: true``) subscribing to the dashboard's feed."""

from ..errors import BrokerError

RESERVED_PREFIX = '#gsc/'
"""Internal channels (``#gsc/presence/<channel>``, ``#gsc/dashboard``) start with this."""
DASHBOARD_CHANNEL = RESERVED_PREFIX + 'dashboard'
DASHBOARD_CLAIM = 'gscDashboard'

ACTIONS = {'subscribe': 'Failed to subscribe socket to the %.100s channel - reserved channel',
           'publish': 'Failed to publish to the %.100s channel - reserved channel',
           'presence': 'Failed to get the presence of the %.100s channel - reserved channel'}


def is_dashboard_viewer(socket):
    """Whether ``socket``'s auth token (signed with the authKey) grants the dashboard."""
    token = socket.auth_token
    return isinstance(token, dict) and token.get(DASHBOARD_CLAIM) is True


def reserved_channel_error(action, channel, socket=None):
    """The BrokerError refusing a client's ``action`` ('subscribe', 'publish' or 'presence') on
    ``channel`` when it is reserved; None when ``socket`` may use it (a dashboard viewer
    subscribing to the feed)."""
    if not isinstance(channel, str) or not channel.startswith(RESERVED_PREFIX):
        return None
    if action == 'subscribe' and channel == DASHBOARD_CHANNEL and socket is not None and \
            is_dashboard_viewer(socket):
        return None
    return BrokerError(ACTIONS[action] % channel)
