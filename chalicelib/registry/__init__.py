"""The connection registry: one DynamoDB table, one module per kind of item (see
:mod:`chalicelib.registry.table` for the key schema and docs/registry.md for the whole layout).

Layer: below delivery and the dialects, above auth, channels and settings; it imports neither
delivery nor a dialect (dialects join in through :data:`connections.REMOVAL_HOOKS` and
:data:`occupancy.OCCUPANCY_LISTENERS`).
"""
