"""STUB — replaced by the WebSocket work (SQS push worker)."""


def handle_batch(event, app): raise NotImplementedError
