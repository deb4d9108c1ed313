"""What a WebSocket connection speaks: :mod:`.native` (our JSON frames, a JWT at ``$connect``)
and :mod:`.pusher` (Pusher Channels protocol 7, with its signatures, HTTP API and webhooks).
Peers: neither imports the other. Layer: below the doors, above delivery.
"""
