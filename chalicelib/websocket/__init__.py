"""API Gateway WebSocket rooms: ``ws`` (the ``$connect``/``$default``/``$disconnect``
handlers), ``connections`` (the DynamoDB registry of connections and subscriptions), ``push``
(delivery to users, connections and channels), ``sender`` and ``signing`` (the
PostToConnection engine and its SigV4 signer), ``shards`` (sharded fan-out through the push
queue) and ``worker`` (the SQS push worker).

No imports here: each room is imported by name when first used (``app._Room``), so a cold
start loads only what its function calls.
"""
