"""STUB — replaced by the foundation work (API Gateway policy documents)."""


def rest_authorizer(auth_request):
    raise NotImplementedError


def websocket_authorizer(event):
    raise NotImplementedError
