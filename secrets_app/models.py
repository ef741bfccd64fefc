"""Stored variables: secrets (Fernet-encrypted, write-only) and parameters (plain, visible),
each global or scoped to one pipeline. They are merged into a run's environment by
runs_app.environment."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from secrets_app import crypto
from secrets_app.env_names import runtime_env_name_problem
from secrets_app.fields import EncryptedTextField


def validate_variable_name(name: str) -> None:
    if problem := runtime_env_name_problem(name):
        raise ValidationError(problem)


class Variable(models.Model):
    class Kind(models.TextChoices):
        SECRET = "secret", "secret"
        PARAMETER = "parameter", "parameter"

    name = models.CharField(max_length=200, validators=[validate_variable_name])
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.SECRET)
    # A string reference: this app is below the catalogue and imports none of it.
    pipeline = models.ForeignKey(
        "pipelines_app.Pipeline",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="variables",
        help_text="Empty: every pipeline gets it.",
    )
    # Exactly one of the two holds the value: plain for a parameter, a Fernet token for a
    # secret (the plain text of a secret is never stored).
    value = models.TextField(blank=True)
    encrypted_value = EncryptedTextField()
    description = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "secret or parameter"
        verbose_name_plural = "secrets and parameters"
        # add/change/delete_variable cover parameters; secrets also need this (admins).
        permissions = [("manage_secrets", "Can create, replace and delete secrets")]
        ordering = ["name", "pipeline__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "pipeline"],
                condition=Q(pipeline__isnull=False),
                name="variable_name_unique_per_pipeline",
                violation_error_message="This pipeline already has a variable of that name.",
            ),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(pipeline__isnull=True),
                name="variable_name_unique_globally",
                violation_error_message="There already is a global variable of that name.",
            ),
        ]

    def __str__(self) -> str:  # never the value
        scope = self.pipeline.name if self.pipeline_id else "global"
        return f"{self.name} ({self.kind}, {scope})"

    @property
    def is_secret(self) -> bool:
        return self.kind == self.Kind.SECRET

    @property
    def scope(self) -> str:
        return self.pipeline.name if self.pipeline_id else "all pipelines"

    def set_value(self, value: str) -> None:
        if self.is_secret:
            self.encrypted_value, self.value = crypto.encrypt(value), ""
        else:
            self.value, self.encrypted_value = value, ""

    def plain_value(self) -> str:
        """The value for a run; raises crypto.DecryptionError naming the variable."""
        if not self.is_secret:
            return self.value
        return crypto.decrypt(self.encrypted_value, f"the stored secret {self.name}")

    @classmethod
    def for_pipeline(cls, pipeline: models.Model) -> list[Variable]:
        """Global ones first, then the pipeline's own, so the pipeline's win when merged."""
        variables = cls.objects.filter(Q(pipeline__isnull=True) | Q(pipeline=pipeline))
        return sorted(variables, key=lambda variable: (variable.pipeline_id is not None,))
