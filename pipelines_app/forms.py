from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms

from pipelines_app.cron import CRON_EXAMPLES, normalize_cron
from pipelines_app.models import GitSource, Schedule
from secrets_app.forms import write_only_input

SCHEDULE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class ScheduleForm(forms.ModelForm):
    """A schedule made in the UI or admin (those from pipeline.json are edited in git)."""

    interval_seconds = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="Every N seconds.",
        error_messages={"min_value": "The interval is a whole number of seconds, 1 or more."},
    )

    class Meta:
        model = Schedule
        fields = [
            "pipeline",
            "config_id",
            "cron",
            "interval_seconds",
            "run_once_at",
            "timezone",
            "start_at",
            "end_at",
            "enabled",
        ]
        help_texts = {
            "config_id": "Letters, digits, _ - . (what run_config_id and webhooks refer to).",
            "run_once_at": "One run at this moment.",
        }

    def clean_config_id(self) -> str:
        value = self.cleaned_data["config_id"].strip()
        if not SCHEDULE_ID.match(value):
            raise forms.ValidationError("Use letters, digits, _ - and . only (at most 100).")
        return value

    def clean_cron(self) -> str:
        value = self.cleaned_data["cron"].strip()
        if not value:
            return ""
        try:
            return normalize_cron(value)
        except ValueError as problem:
            raise forms.ValidationError(
                f"Cron {value!r} {problem}; for example {CRON_EXAMPLES}."
            ) from None

    def clean_timezone(self) -> str:
        value = self.cleaned_data["timezone"].strip()
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise forms.ValidationError(
                    f"{value!r} is not a time zone name; use e.g. Europe/Berlin or UTC."
                ) from None
        return value

    def clean(self) -> dict:
        cleaned = super().clean()
        timings = [cleaned.get(k) for k in ("cron", "interval_seconds", "run_once_at")]
        if sum(1 for value in timings if value) != 1:
            raise forms.ValidationError(
                "Give exactly one of: a cron expression, an interval in seconds, or one moment."
            )
        start, end = cleaned.get("start_at"), cleaned.get("end_at")
        if start and end and end <= start:
            self.add_error("end_at", "The end must be after the start.")
        if cleaned.get("timezone") and not cleaned.get("cron"):
            self.add_error("timezone", "A time zone applies to cron schedules only.")
        return cleaned

    def save(self, commit: bool = True) -> Schedule:
        schedule = super().save(commit=False)
        schedule.origin = Schedule.Origin.UI
        schedule.plan()
        if commit:
            schedule.save()
        return schedule


def write_only_field(label: str, help_text: str) -> forms.CharField:
    """A credential input that never renders what is stored; empty keeps it."""
    return forms.CharField(
        label=label,
        required=False,
        widget=write_only_input(),
        help_text=f"{help_text} Stored encrypted; empty keeps the stored one.",
    )


class GitSourceForm(forms.ModelForm):
    """The repository; the token and webhook secret are write-only."""

    new_token = write_only_field("HTTPS token", "For HTTPS token authentication.")
    new_webhook_secret = write_only_field(
        "Push webhook secret", "The secret GitHub signs push events with."
    )

    class Meta:
        model = GitSource
        fields = ["url", "branch", "subdir", "auth", "ssh_known_hosts"]

    def clean_subdir(self) -> str:
        value = self.cleaned_data["subdir"].strip().strip("/")
        if ".." in value.split("/"):
            raise forms.ValidationError("The sub-folder must stay inside the repository.")
        return value

    def save(self, commit: bool = True) -> GitSource:
        source = super().save(commit=False)
        for field in ("token", "webhook_secret"):
            if value := self.cleaned_data.get(f"new_{field}"):
                source.set_secret(field, value)
        if commit:
            source.save()
        return source
