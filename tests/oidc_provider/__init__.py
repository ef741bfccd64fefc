"""A real OpenID Connect provider (django-oauth-toolkit) for the sign-in tests, started as
its own server on loopback (tests/fastflow_site/test_oidc_browser.py). Not Fast-Flow code."""
