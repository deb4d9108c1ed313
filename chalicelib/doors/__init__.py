"""The doors: thin entry points that hand each event to its room. :mod:`.websocket`
(``$connect``/``$default``/``$disconnect`` by dialect), :mod:`.authorizer` (the TOKEN and
REQUEST authorizers), :mod:`.rest` (``GET /me``, ``POST /notifications``) and :mod:`.queue`
(the SQS push worker). The top layer: nothing in chalicelib imports a door.
"""
