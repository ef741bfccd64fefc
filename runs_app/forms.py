"""The runs list's filters, validated like any form (bad values are ignored, never a 500)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun

WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
SORTS = {
    "-queued_at": ("-queued_at", "-id"),
    "queued_at": ("queued_at", "id"),
    "-finished_at": ("-finished_at", "-id"),
    "pipeline": ("pipeline__name", "-queued_at", "-id"),
}


class RunFilterForm(forms.Form):
    pipeline = forms.CharField(required=False, max_length=100)
    status = forms.ChoiceField(
        required=False, choices=[("", "any status"), *PipelineRun.Status.choices]
    )
    trigger = forms.ChoiceField(
        required=False, choices=[("", "any trigger"), *PipelineRun.Trigger.choices]
    )
    window = forms.ChoiceField(
        required=False,
        choices=[
            ("", "any time"),
            ("1h", "last hour"),
            ("24h", "last 24 h"),
            ("7d", "last 7 days"),
            ("30d", "last 30 days"),
        ],
    )
    since = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    sort = forms.ChoiceField(
        required=False,
        choices=[
            ("-queued_at", "newest first"),
            ("queued_at", "oldest first"),
            ("-finished_at", "recently finished"),
            ("pipeline", "pipeline"),
        ],
    )

    def filter(self, runs: QuerySet[PipelineRun]) -> QuerySet[PipelineRun]:
        data = self.cleaned_data if self.is_valid() else {}
        if data.get("pipeline"):
            runs = runs.filter(pipeline__name=data["pipeline"])
        if data.get("status"):
            runs = runs.filter(status=data["status"])
        if data.get("trigger"):
            runs = runs.filter(trigger=data["trigger"])
        if data.get("window"):
            runs = runs.filter(queued_at__gte=timezone.now() - WINDOWS[data["window"]])
        if data.get("since"):
            runs = runs.filter(queued_at__gte=data["since"])
        if data.get("until"):
            runs = runs.filter(queued_at__lt=data["until"])
        return runs.order_by(*SORTS[data.get("sort") or "-queued_at"])


class LogSearchForm(forms.Form):
    """Search across runs' logs (runs_app.log_search)."""

    q = forms.CharField(max_length=200, label="Text")
    pipeline = forms.CharField(required=False, max_length=100)
    window = forms.ChoiceField(required=False, choices=RunFilterForm.base_fields["window"].choices)
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean_pipeline(self) -> Pipeline | None:
        name = self.cleaned_data["pipeline"]
        if not name:
            return None
        pipeline = Pipeline.objects.filter(name=name).first()
        if pipeline is None:
            raise forms.ValidationError(f"There is no pipeline named {name}.")
        return pipeline

    def since(self) -> datetime | None:
        window = self.cleaned_data.get("window")
        return timezone.now() - WINDOWS[window] if window else None
