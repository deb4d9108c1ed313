"""Authentication rooms: ``identity`` (where a token comes from, verification into a
``Principal``), ``principal`` (the verified caller and its flat authorizer-context form),
``tokens`` (compact JWS parsing and claim checks) and ``jwks`` (key sets per issuer). The API
Gateway authorizers that use them are a door: :mod:`chalicelib.doors.authorizer`.

No imports here: each room is imported by name when first used (``app._Room``), so a cold
start loads only what its function calls.
"""
