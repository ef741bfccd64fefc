"""ASGI entry point; Channels routing for websockets is added with the live UI."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")

application = get_asgi_application()
