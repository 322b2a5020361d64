"""A Django view that suspends mid-transaction, in one module (SQLite, ATOMIC_REQUESTS).

    wsgiplus examples.django_app:application --threads 2

* ``POST /orders/<sku>``: creates an order row, suspends while a (simulated,
  200 ms) price service answers, stores the price and commits - one
  transaction on one connection, whichever threads ran it.
* ``GET /orders``: the committed orders.

The database file is ``DJANGO_EXAMPLE_DB`` (default ``example-orders.sqlite3``
in the current directory); its table is created on start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=["django.contrib.contenttypes"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJANGO_EXAMPLE_DB", "example-orders.sqlite3"),
            "ATOMIC_REQUESTS": True,
        }},
    )

import django  # noqa: E402

django.setup()

from django.db import connection, models  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402

from wsgiplus import bridge  # noqa: E402
from wsgiplus.contrib.django import SuspendingResponse  # noqa: E402


class Order(models.Model):
    sku = models.CharField(max_length=40)
    state = models.CharField(max_length=20)
    price = models.IntegerField(null=True)

    class Meta:
        app_label = "contenttypes"  # a one-module example borrows an installed app's label
        db_table = "example_order"


async def price_service(sku: str) -> int:
    """Stands in for an HTTP call to another service."""
    import asyncio

    await asyncio.sleep(0.2)
    return 100 + len(sku)


@csrf_exempt
@require_POST
def create_order(request: Any, sku: str) -> SuspendingResponse:
    def body() -> Iterator[Any]:
        order = Order.objects.create(sku=sku, state="pricing")
        fut = bridge.run(price_service(sku))
        yield fut  # suspended: no thread, the transaction stays open on our connection
        order.price = fut.result()
        order.state = "priced"
        order.save()
        yield json.dumps({"id": order.id, "sku": sku, "price": order.price}).encode()

    return SuspendingResponse(body(), content_type="application/json")


def list_orders(request: Any) -> JsonResponse:
    return JsonResponse({"orders": list(Order.objects.order_by("id").values("id", "sku", "state", "price"))})


urlpatterns = [path("orders/<str:sku>", create_order), path("orders", list_orders)]

with connection.schema_editor() as editor:
    if Order._meta.db_table not in connection.introspection.table_names():
        editor.create_model(Order)
connection.close()

from django.core.wsgi import get_wsgi_application  # noqa: E402

from wsgiplus.compat import portable  # noqa: E402

# portable: on a plain WSGI server (gunicorn, waitress) the futures are waited for in place
application = portable(get_wsgi_application())
