"""The realtime service: wiring only. Each handler hands its event to a room of chalicelib.

Doors: the REST API (``/me``, ``/pusher/*``, ``/notifications``), the WebSocket API
(``$connect``, ``$default``, ``$disconnect``, and the REQUEST authorizer ``ws_authorizer``)
and the SQS push queue. See docs/architecture.md for the rooms and their layers.
"""
import importlib

from chalice import Chalice

from chalicelib import observability, settings
from chalicelib.doors import authorizer


class _Room:
    """A room of chalicelib imported at its first use, so that each Lambda function imports
    only the rooms it calls: the two authorizers, whose cold start every ``$connect`` and
    REST call may wait for, never load the push engine, the registry or the Pusher library
    (docs/benchmarks.md: cold import). The first attribute read replaces this stand-in (the
    global ``alias``) by the module itself."""

    def __init__(self, alias: str, name: str) -> None:
        self._alias = alias  # the global name in this module: "ws", "pusher_http", ...
        self._name = name  # dotted under chalicelib: "doors.rest", "doors.websocket", ...

    def __getattr__(self, attribute: str):
        module = importlib.import_module(f"chalicelib.{self._name}")
        if self._name in _REGISTRY_ROOMS:
            # joins the registry's occupancy listeners (channel_occupied/vacated webhooks) and
            # removal hooks (presence member_removed, the departures a reconnect resumes) in
            # every room that changes subscriptions or removes connections (a 410 anywhere)
            importlib.import_module("chalicelib.delivery.webhooks_out")
            importlib.import_module("chalicelib.dialects.pusher.socket")
        globals()[self._alias] = module
        return getattr(module, attribute)


#: rooms that subscribe, unsubscribe or remove connections
_REGISTRY_ROOMS = ("doors.websocket", "doors.queue", "doors.rest", "dialects.pusher.socket",
                   "dialects.pusher.http_api")
rest = _Room("rest", "doors.rest")
ws = _Room("ws", "doors.websocket")
worker = _Room("worker", "doors.queue")
pusher_auth = _Room("pusher_auth", "dialects.pusher.auth")
pusher_http = _Room("pusher_http", "dialects.pusher.http_api")
pusher_socket = _Room("pusher_socket", "dialects.pusher.socket")
webhook_sender = _Room("webhook_sender", "delivery.webhook_sender")

app = Chalice(app_name="realtime", configure_logs=False)  # JSON logs: chalicelib.observability
app.experimental_feature_flags.update(["WEBSOCKETS"])
observability.setup_logging()


def observe(event, get_response):
    """Each HTTP, WebSocket and SQS handler call is one invocation: correlation fields on its
    log lines, its metrics flushed once at the end (chalicelib.observability)."""
    return observability.chalice_middleware(event, get_response)


def batch_webhooks(event, get_response):
    """Webhooks out raised while one event is handled go to the push queue together when it
    ends, one job per external target (chalicelib.delivery.webhook_sender); inside
    ``observe``."""
    with webhook_sender.batch():
        return get_response(event)


for _event_type in ("http", "websocket", "sqs"):
    app.register_middleware(observe, _event_type)
    app.register_middleware(batch_webhooks, _event_type)

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
    return rest.me(app.current_request)


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
    return rest.notify(app.current_request, app)


@app.route("/notifications", methods=["OPTIONS"])
def notifications_preflight():
    """CORS preflight; no authorizer (browsers send no credentials on a preflight)."""
    return pusher_auth.preflight(app.current_request)


# --- Pusher HTTP API (server libraries publish here; signed requests) ------------------------

@app.route("/apps/{app_id}/events", methods=["POST"], content_types=["application/json"])
def pusher_http_events(app_id):
    return pusher_http.handle(app.current_request, "POST events", pusher_http.trigger, app_id)


@app.route("/apps/{app_id}/batch_events", methods=["POST"], content_types=["application/json"])
def pusher_http_batch_events(app_id):
    return pusher_http.handle(app.current_request, "POST batch_events",
                              pusher_http.trigger_batch, app_id)


@app.route("/apps/{app_id}/channels", methods=["GET"])
def pusher_http_channels(app_id):
    return pusher_http.handle(app.current_request, "GET channels", pusher_http.list_channels,
                              app_id)


@app.route("/apps/{app_id}/channels/{channel_name}", methods=["GET"])
def pusher_http_channel(app_id, channel_name):
    return pusher_http.handle(app.current_request, "GET channel", pusher_http.channel_info,
                              app_id, channel_name)


@app.route("/apps/{app_id}/channels/{channel_name}/users", methods=["GET"])
def pusher_http_channel_users(app_id, channel_name):
    return pusher_http.handle(app.current_request, "GET users", pusher_http.channel_users,
                              app_id, channel_name)


@app.route("/apps/{app_id}/users/{user_id}/terminate_connections", methods=["POST"],
           content_types=["application/json"])
def pusher_http_terminate(app_id, user_id):
    return pusher_http.handle(app.current_request, "POST terminate_connections",
                              pusher_http.terminate_user_connections, app_id, user_id)


@app.route("/users/{user_id}/terminate_connections", methods=["POST"],
           content_types=["application/json"])
def pusher_http_terminate_unscoped(user_id):
    """The path the Python ``pusher`` library 3.3 sends (it leaves out ``/apps/{app_id}``)."""
    return pusher_http.handle(app.current_request, "POST terminate_connections",
                              pusher_http.terminate_user_connections, None, user_id)


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


@app.lambda_function(name="pusher_hello")
def pusher_hello(event, context):
    """Sends a Pusher connection's first frame once ``$connect`` has returned (invoked
    asynchronously by ``ws_connect``)."""
    return pusher_socket.hello(event)


@app.lambda_function(name="registry_stream")
def registry_stream(event, context):
    """DynamoDB Streams of the registry: TTL deletes become presence ``member_removed``."""
    with webhook_sender.batch():
        return pusher_socket.on_registry_stream(event)


# --- SQS push worker ------------------------------------------------------------------------

@app.on_sqs_message(queue=settings.push_queue_name(), batch_size=10)
def push_worker(event):
    return worker.handle_batch(event, app)
