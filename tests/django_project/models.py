from django.db import models


class Entry(models.Model):
    """One row per step of a request: the test checks every request left exactly its rows."""

    rid = models.CharField(max_length=40)
    step = models.IntegerField()
    note = models.CharField(max_length=200, default="")

    class Meta:
        app_label = "django_project"
