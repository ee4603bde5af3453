"""Channels reserved for gsc itself (``#gsc/...``): a client may neither subscribe nor
publish to them, except a dashboard viewer (a socket whose auth token carries
``gscDashboard: true``) subscribing to the dashboard's feed."""

PREFIX = '#gsc/'
DASHBOARD_CHANNEL = '#gsc/dashboard'
DASHBOARD_CLAIM = 'gscDashboard'


def is_dashboard_viewer(socket):
    """Whether ``socket``'s auth token (signed with the authKey) grants the dashboard."""
    token = socket.auth_token
    return isinstance(token, dict) and token.get(DASHBOARD_CLAIM) is True


def subscribe_refusal(socket, channel):
    """Why ``socket`` may not subscribe to ``channel``; None when it may."""
    if not is_reserved(channel):
        return None
    if channel == DASHBOARD_CHANNEL and is_dashboard_viewer(socket):
        return None
    return 'the %s channels are reserved for gsc' % PREFIX


def publish_refusal(channel):
    """Why a client may not publish to ``channel``; None when it may."""
    return 'the %s channels are reserved for gsc' % PREFIX if is_reserved(channel) else None


def is_reserved(channel):
    """Whether ``channel`` is one of gsc's own."""
    return isinstance(channel, str) and channel.startswith(PREFIX)
