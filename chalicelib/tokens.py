"""STUB — replaced by the foundation work (compact JWS parsing, claim checks)."""


def verify(token, settings):
    """Verify ``token`` and return its claims (dict). Raises chalicelib.errors.TokenError."""
    raise NotImplementedError
