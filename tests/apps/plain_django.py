"""A small real Django project in one module, served by the wsgiplus CLI in a subprocess."""

from __future__ import annotations

import os

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=["django.contrib.contenttypes"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": os.environ.get("PLAIN_DJANGO_DB", ":memory:")}},
    )

import django  # noqa: E402

django.setup()

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402


def hello(request):
    return HttpResponse("hello from django")


@csrf_exempt
def echo(request):
    return JsonResponse({"method": request.method, "body": request.body.decode(),
                         "q": request.GET.get("q"), "path": request.path,
                         "script_name": request.META.get("SCRIPT_NAME")})


def stream(request):
    return StreamingHttpResponse(f"part{i};" for i in range(5))


def boom(request):
    raise RuntimeError("django view failed")


urlpatterns = [path("", hello), path("echo/", echo), path("stream/", stream), path("boom/", boom)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
