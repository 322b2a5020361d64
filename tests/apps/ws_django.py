"""A minimal Django site with a thread-free WebSocket view (wsgiplus.contrib.django_ws)."""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="test",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from wsgiplus.contrib.django_ws import websocket_view  # noqa: E402


@websocket_view(subprotocols=["echo.v1"])
def echo(request: Any, ws: Any, prefix: str) -> Any:
    while True:
        fut = ws.receive()
        yield fut
        message = fut.result()
        if message is None:
            return
        yield ws.send(f"{prefix}{message}:{request.GET.get('tag', '')}:{ws.subprotocol}")


def plain(request: Any) -> HttpResponse:
    return HttpResponse("plain django")


urlpatterns = [path("ws/<str:prefix>", echo), path("", plain)]
application = get_wsgi_application()
