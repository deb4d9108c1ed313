"""The realtime service: wiring only. Each handler hands its event to a room of chalicelib.

Doors: the REST API (``/me``, ``/pusher/*``, ``/notifications``), the WebSocket API
(``$connect``, ``$default``, ``$disconnect``, and the REQUEST authorizer ``ws_authorizer``)
and the SQS push queue. See ../shared/DESIGN.md and README.md.
"""
import importlib

from chalice import Chalice

from chalicelib import authorizer, observability, settings


class _Room:
    """A room of chalicelib imported at its first use, so that each Lambda function imports
    only the rooms it calls: the two authorizers, whose cold start every ``$connect`` and
    REST call may wait for, never load the push engine, the registry or the Pusher library
    (README, "Benchmarks": cold import). The first attribute read replaces this stand-in by
    the module itself."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str):
        module = importlib.import_module(f"chalicelib.{self._name}")
        globals()[self._name] = module
        return getattr(module, attribute)


http, pusher_auth, ws, worker = (_Room(name) for name in ("http", "pusher_auth", "ws", "worker"))

app = Chalice(app_name="realtime", configure_logs=False)  # JSON logs: chalicelib.observability
app.experimental_feature_flags.update(["WEBSOCKETS"])
observability.setup_logging()


def observe(event, get_response):
    """Each HTTP, WebSocket and SQS handler call is one invocation: correlation fields on its
    log lines, its metrics flushed once at the end (chalicelib.observability)."""
    return observability.chalice_middleware(event, get_response)


for _event_type in ("http", "websocket", "sqs"):
    app.register_middleware(observe, _event_type)

FORM_AND_JSON = ["application/x-www-form-urlencoded", "application/json", "text/plain"]


# --- authorizers ----------------------------------------------------------------------------

@app.authorizer()
@observability.observed("jwt_auth")
def jwt_auth(auth_request):
    """TOKEN authorizer for REST routes (Authorization header)."""
    return authorizer.rest_authorizer(auth_request)


@app.lambda_function(name="ws_authorizer")
@observability.observed("ws_authorizer")
def ws_authorizer(event, context):
    """REQUEST authorizer for the WebSocket ``$connect`` route."""
    return authorizer.websocket_authorizer(event)


# --- REST -----------------------------------------------------------------------------------

@app.route("/me", methods=["GET"], authorizer=jwt_auth)
def me():
    return http.me(app.current_request)


@app.route("/pusher/auth", methods=["POST"], content_types=FORM_AND_JSON)
def pusher_channel_auth():
    return pusher_auth.channel_auth(app.current_request)


@app.route("/pusher/auth", methods=["GET"])
def pusher_channel_auth_jsonp():
    return pusher_auth.channel_auth_jsonp(app.current_request)


@app.route("/pusher/user-auth", methods=["POST"], content_types=FORM_AND_JSON)
def pusher_user_auth():
    return pusher_auth.user_auth(app.current_request)


@app.route("/pusher/auth", methods=["OPTIONS"])
def pusher_channel_auth_preflight():
    return pusher_auth.preflight(app.current_request)


@app.route("/pusher/user-auth", methods=["OPTIONS"])
def pusher_user_auth_preflight():
    return pusher_auth.preflight(app.current_request)


@app.route("/pusher/webhooks", methods=["POST"], content_types=FORM_AND_JSON)
def pusher_webhooks():
    return pusher_auth.webhooks(app.current_request)


@app.route("/notifications", methods=["POST"], authorizer=jwt_auth,
           content_types=["application/json"])
def notifications():
    return ws.notify(app.current_request, app)


@app.route("/notifications", methods=["OPTIONS"])
def notifications_preflight():
    """CORS preflight; no authorizer (browsers send no credentials on a preflight)."""
    return pusher_auth.preflight(app.current_request)


# --- WebSocket ------------------------------------------------------------------------------

@app.on_ws_connect()
def ws_connect(event):
    return ws.on_connect(event, app)


@app.on_ws_message()
def ws_message(event):
    return ws.on_message(event, app)


@app.on_ws_disconnect()
def ws_disconnect(event):
    return ws.on_disconnect(event, app)


# --- SQS push worker ------------------------------------------------------------------------

@app.on_sqs_message(queue=settings.push_queue_name(), batch_size=10)
def push_worker(event):
    return worker.handle_batch(event, app)
