"""Pusher Channels rooms: ``pusher_auth`` (channel and user authorization, JSONP, webhooks in),
``pusher_http`` (Pusher's HTTP API), ``chalicelib.protocol.pusher`` (protocol 7 framing and signatures,
pure), ``pusher_socket`` (our WebSocket API's Pusher dialect), ``webhooks`` (webhook events to
the app's handlers), ``webhooks_out`` (the events our WebSocket API raises) and
``webhook_sender`` (their signed POSTs to external URLs through the push queue).

No imports here: each room is imported by name when first used (``app._Room``), so a cold
start loads only what its function calls. Inside this package ``import pusher`` is absolute
and still means the third-party Pusher library, not this package.
"""
