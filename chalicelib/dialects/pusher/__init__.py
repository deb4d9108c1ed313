"""The Pusher Channels dialect: ``socket`` (our WebSocket API speaking protocol 7), ``auth``
(channel and user authorization, JSONP, webhooks in), ``http_api`` (Pusher's HTTP API),
``webhooks`` (webhook events to the app's handlers), ``webhooks_out`` (the events our
WebSocket API raises) and ``webhook_sender`` (their signed POSTs to external URLs through the
push queue). Its wire format, pure, is :mod:`chalicelib.protocol.pusher`.

A peer of :mod:`chalicelib.dialects.native`: neither imports the other.

No imports here: each room is imported by name when first used (``app._Room``), so a cold
start loads only what its function calls. Inside this package ``import pusher`` is absolute
and still means the third-party Pusher library, not this package.
"""
