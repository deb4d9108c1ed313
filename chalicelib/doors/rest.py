"""The REST doors of the push engine: ``GET /me`` (who the token says the caller is) and
``POST /notifications`` (push an event to a user or a channel).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from chalicelib import jsonutil
from chalicelib.auth.identity import principal_from_request
from chalicelib.delivery import post, push
from chalicelib.dialects.native import NOTIFY_SCOPE
from chalicelib.errors import (AppError, BadRequest, Forbidden, PayloadTooLarge, json_response,
                               log_error)
from chalicelib.logtext import for_log

log = logging.getLogger("realtime.ws")


def me(request):
    """``GET /me``: the caller's principal as ``{"user_id", "sub", "iss", "scopes", "claims"}``
    (``user_id``: the caller's name in channels, presence, Pusher sign-in and notifications).

    Behind ``jwt_auth``; answers 401 JSON if the authorizer context is unusable, and 503
    ``not_configured`` naming the variable when the JWT settings are broken (the authorizer's
    ``config_error`` marker, see :mod:`chalicelib.doors.authorizer`).
    """
    try:
        return principal_from_request(request).to_json()
    except AppError as err:
        log_error(err, "GET /me")
        return json_response(err)

#: largest ``POST /notifications`` body accepted, bytes (a frame is at most 128 KB anyway)
MAX_NOTIFICATION_BODY_BYTES = post.MAX_FRAME_BYTES + 4096


# --- POST /notifications ----------------------------------------------------------------------

def notify(request: Any, app: Any = None):
    """``POST /notifications`` (behind ``jwt_auth``): push an event to a user or a channel.

    Body: ``{"user_id": U | "channel": C, "event": E, "data": D}``; ``U`` is a user id
    (:attr:`Principal.user_id`, as ``GET /me`` shows it). A caller may always notify themself
    (``user_id`` equal to their own user id); any other user, and every channel, needs the
    scope :data:`NOTIFY_SCOPE`.

    Returns:
        a Chalice ``Response``: 200 with the delivery summary ``{"delivered", "gone", "failed",
        "retryable"}``; 202 with ``"queued"`` and ``"shards"`` added when the audience was
        over ``PUSH_SHARD_THRESHOLD`` and went to the push queue in shards
        (:mod:`chalicelib.delivery.shards`); a JSON error otherwise: 400 (bad JSON or fields), 401,
        403 (scope missing), 413 (body over :data:`MAX_NOTIFICATION_BODY_BYTES` bytes or a
        frame over 128 KB), 503 (registry, push queue or settings unavailable). Every answer
        carries the stage's CORS headers (:func:`chalicelib.dialects.pusher.auth.cors_headers`), so a
        browser page may read it.
    """
    from chalice import Response

    from chalicelib.dialects.pusher.auth import cors_headers

    headers = cors_headers()
    try:
        principal = principal_from_request(request)
        raw_body = request.raw_body or b""
        if len(raw_body) > MAX_NOTIFICATION_BODY_BYTES:
            raise PayloadTooLarge(f"body is over {MAX_NOTIFICATION_BODY_BYTES} bytes")
        try:
            body = jsonutil.loads(raw_body)
        except jsonutil.JSONRejected as err:
            raise BadRequest(f"the body is not valid JSON: {err.reason}") from None
        notification = push.parse_notification(body, targets=("user_id", "channel"))
        own = notification.target == "user_id" and notification.address == principal.user_id
        if not own and not principal.has_scope(NOTIFY_SCOPE):
            raise Forbidden(f"{principal.user_id} lacks {NOTIFY_SCOPE}",
                            public_message=f"Notifying others needs the scope {NOTIFY_SCOPE}")
        started = time.monotonic()
        summary = push.deliver(notification)
        log.info("notification by %s to %s %s: %s in %.3f s", principal.user_id,
                 notification.target, for_log(notification.address), summary,
                 time.monotonic() - started)
        return Response(body=summary, status_code=202 if "shards" in summary else 200,
                        headers={"Content-Type": "application/json", **headers})
    except AppError as err:
        log_error(err, "POST /notifications")
        return json_response(err, headers)
