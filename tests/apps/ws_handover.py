"""Unchanged third-party WebSocket apps that speak on ``environ["gunicorn.socket"]``.

``flask_app``: Flask-Sock (simple-websocket underneath). ``socketio_app``:
python-socketio in threading mode. Nothing here knows about WSGI+.
"""

from __future__ import annotations

import socketio
from flask import Flask
from flask_sock import Sock

flask_app = Flask(__name__)
sock = Sock(flask_app)


@flask_app.route("/")
def index() -> str:
    return "plain flask"


@sock.route("/echo")
def echo(ws) -> None:  # type: ignore[no-untyped-def]
    while True:
        data = ws.receive()
        if data == "bye":
            ws.close(reason=1000, message="bye")
            return
        ws.send(data)


sio = socketio.Server(async_mode="threading")
socketio_app = socketio.WSGIApp(sio)


@sio.event
def ping_me(sid, data):  # type: ignore[no-untyped-def]
    sio.emit("pong_you", {"got": data}, to=sid)
    return {"ack": data}
