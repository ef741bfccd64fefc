from __future__ import annotations

from django.urls import path

from runs_app.consumers import RunLogConsumer

websocket_urlpatterns = [
    path("ws/runs/<uuid:public_id>/log/", RunLogConsumer.as_asgi()),
]
