"""Delivery: one engine for every dialect. Frames are encoded per connection's dialect
(:mod:`.push`), posted with SigV4 over keep-alive connections (:mod:`.post`, :mod:`.sender`,
:mod:`.signing`), sharded through the push queue when the audience is large (:mod:`.shards`),
and counted in summaries (:mod:`.summary`).

Layer: below the dialects and doors, above the registry; it imports no dialect (it uses the
pure wire format :mod:`chalicelib.protocol.pusher`).
"""
