"""STUB — replaced by the WebSocket work."""


def on_connect(event, app): raise NotImplementedError
def on_message(event, app): raise NotImplementedError
def on_disconnect(event, app): raise NotImplementedError
def notify(request, app): raise NotImplementedError
