from __future__ import annotations

from oauth2_provider.oauth2_validators import OAuth2Validator


class ClaimsValidator(OAuth2Validator):
    """Says who the person is, and that their address is verified (as real providers do)."""

    oidc_claim_scope = None  # every claim below, whatever the scopes

    def get_additional_claims(self, request) -> dict:
        user = request.user
        return {
            "email": user.email,
            "email_verified": user.last_name != "unverified",
            "name": user.get_full_name() or user.username,
            "preferred_username": user.username,
        }
