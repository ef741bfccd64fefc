"""Encrypted secrets and parameters (models arrive with the secrets issue)."""
