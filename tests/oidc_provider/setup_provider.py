"""Prepare the provider's database: a person and the Fast-Flow client application."""

from __future__ import annotations

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from oauth2_provider.models import Application  # noqa: E402

username, password, email, redirect_uri, client_id, client_secret = sys.argv[1:7]
call_command("migrate", verbosity=0)
get_user_model().objects.create_user(username, email, password, first_name="Olivia")
Application.objects.create(
    name="Fast-Flow",
    client_id=client_id,
    client_secret=client_secret,
    client_type=Application.CLIENT_CONFIDENTIAL,
    authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
    redirect_uris=redirect_uri,
    algorithm=Application.RS256_ALGORITHM,
)
