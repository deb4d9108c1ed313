"""Shared test helpers (events shaped as API Gateway sends them, servers on 127.0.0.1)."""
