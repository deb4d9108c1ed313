"""Authentication rooms: ``identity`` (where a token comes from, verification into a
``Principal``), ``principal`` (the verified caller and its flat authorizer-context form),
``tokens`` (compact JWS parsing and claim checks), ``jwks`` (key sets per issuer) and
``authorizer`` (API Gateway TOKEN and REQUEST authorizer responses).

No imports here: each room is imported by name when first used (``app._Room``), so a cold
start loads only what its function calls.
"""
