"""STUB — replaced by the Pusher work."""


def channel_auth(request): raise NotImplementedError
def channel_auth_jsonp(request): raise NotImplementedError
def user_auth(request): raise NotImplementedError
def preflight(request): raise NotImplementedError
def webhooks(request): raise NotImplementedError
