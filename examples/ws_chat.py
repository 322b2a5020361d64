"""A Flask chat room on WebSockets that hold no thread: broadcast to everyone in the room.

    wsgiplus examples.ws_chat:app --threads 2

* ``ws://HOST/chat/<room>?name=NAME``: join ``room``. Every text message a member
  sends goes to every member (the sender included) as ``NAME: message``;
  joins and leaves are announced. ``GET /rooms`` lists the rooms and their sizes.

A member waiting for the next message is a suspended generator, not a
thread, so two threads hold as many members as the connection limit allows.
A broadcast calls ``send()`` on each member's socket from whichever thread
runs the sender's step; it waits for nobody (a slow member's bytes queue on
its own connection, which the server cuts off past its bound). On gunicorn
or werkzeug the same code runs with one thread per member
(``portable_app``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from flask import Flask, request

from wsgiplus.contrib.flask_ws import WebSockets, portable_app

app = Flask(__name__)
sockets = WebSockets(app)

_lock = threading.Lock()
_rooms: dict[str, set[Any]] = {}


def broadcast(room: str, text: str) -> None:
    with _lock:
        members = list(_rooms.get(room, ()))
    for ws in members:
        ws.send(text)  # a future; not waited for: one slow member delays no one


@app.get("/rooms")
def rooms() -> Any:
    with _lock:
        return app.response_class(json.dumps({r: len(m) for r, m in _rooms.items() if m}),
                                  mimetype="application/json")


@sockets.route("/chat/<room>")
def chat(ws: Any, room: str) -> Iterator[Any]:
    name = request.args.get("name", "anon")
    with _lock:
        _rooms.setdefault(room, set()).add(ws)
    try:
        broadcast(room, f"* {name} joined")
        while True:
            fut = ws.receive()
            yield fut  # no thread while this member is silent
            message = fut.result()
            if message is None:
                return
            if isinstance(message, str):
                broadcast(room, f"{name}: {message}")
    finally:
        with _lock:
            _rooms.get(room, set()).discard(ws)
        broadcast(room, f"* {name} left")


portable_app(app)
