"""Dev-only tooling (local stack, dev token issuer). Never part of the Lambda zip."""
