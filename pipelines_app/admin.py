"""Operator console for the catalogue. Everything here comes from the pipeline folders (git is
law), so it is shown read-only; discovery is the way to change it."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import Count, Max, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters

from fastflow_site.audit import Action, record
from pipelines_app import deploy_keys
from pipelines_app.discovery import discover
from pipelines_app.forms import GitSourceForm, ScheduleForm
from pipelines_app.gitsync import SyncNotRequested, request_sync
from pipelines_app.models import DiscoveryScan, GitSource, Pipeline, Schedule, Sync, WebhookKey


class ValidityFilter(admin.SimpleListFilter):
    title = "configuration"
    parameter_name = "validity"

    def lookups(self, request, model_admin):
        return [("valid", "valid"), ("invalid", "has errors"), ("warnings", "has warnings")]

    def queryset(self, request, queryset):
        if self.value() == "valid":
            return queryset.filter(config_errors=[])
        if self.value() == "invalid":
            return queryset.exclude(config_errors=[])
        if self.value() == "warnings":
            return queryset.exclude(config_warnings=[])
        return queryset


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "status_label",
        "entry_type",
        "has_requirements",
        "tag_list",
        "run_count",
        "last_run_at",
        "last_seen_at",
    ]
    list_filter = ["state", ValidityFilter, "enabled", "entry_type", "has_requirements"]
    search_fields = ["name", "description"]
    # Running and warming are added by runs_app.admin, which re-registers this class.
    actions = ["rediscover"]
    fieldsets = [
        (None, {"fields": ["name", "status_label", "description", "tag_list", "enabled"]}),
        ("Problems", {"fields": ["errors_display", "warnings_display"]}),
        (
            "Source",
            {
                "fields": [
                    "folder_path",
                    "bundle",
                    "bundle_commit",
                    "config_file",
                    "entry_type",
                    "requirements_file",
                    "requirements_hash",
                    "requirements_text",
                ]
            },
        ),
        ("Parsed configuration", {"fields": ["config_display"]}),
        ("History", {"fields": ["runs_link", "discovered_at", "last_seen_at", "missing_since"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pipeline]:
        return (
            super()
            .get_queryset(request)
            .annotate(run_count=Count("runs"), last_run_at=Max("runs__queued_at"))
        )

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # pipelines come from folders, not from forms

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Only a pipeline whose folder is gone may be removed, and PROTECT keeps its runs safe.
        return (
            obj is not None
            and obj.state == Pipeline.State.MISSING
            and super().has_delete_permission(request, obj)
        )

    @admin.display(description="status", ordering="state")
    def status_label(self, obj: Pipeline) -> str:
        return obj.status

    @admin.display(description="tags")
    def tag_list(self, obj: Pipeline) -> str:
        return ", ".join(obj.tags)

    @admin.display(description="runs", ordering="run_count")
    def run_count(self, obj: Pipeline) -> int:
        return obj.run_count

    @admin.display(description="last run", ordering="last_run_at")
    def last_run_at(self, obj: Pipeline):
        return obj.last_run_at

    @admin.display(description="errors")
    def errors_display(self, obj: Pipeline) -> str:
        return _message_list(obj.error_messages) or "none"

    @admin.display(description="warnings")
    def warnings_display(self, obj: Pipeline) -> str:
        return _message_list(obj.warning_messages) or "none"

    @admin.display(description="configuration")
    def config_display(self, obj: Pipeline) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.config, indent=2, sort_keys=True))

    @admin.display(description="runs")
    def runs_link(self, obj: Pipeline) -> str:
        url = reverse("admin:runs_app_pipelinerun_changelist") + f"?pipeline__id__exact={obj.pk}"
        return format_html('<a href="{}">{} runs</a>', url, obj.run_count)

    @admin.action(description="Rediscover all pipelines from the pipelines directory")
    def rediscover(self, request: HttpRequest, queryset: QuerySet[Pipeline]) -> None:
        scan, record = discover()
        if scan.error:
            self.message_user(request, scan.error, messages.ERROR)
            return
        self.message_user(
            request,
            f"Discovered {len(scan.pipelines)} pipelines ({record.created_count} new, "
            f"{record.invalid_count} invalid, {record.missing_count} now missing).",
            messages.WARNING if record.invalid_count else messages.SUCCESS,
        )


def _message_list(lines: list[str]) -> str:
    return format_html_join("", "<p>{}</p>", ((line,) for line in lines))


@admin.register(DiscoveryScan)
class DiscoveryScanAdmin(admin.ModelAdmin):
    list_display = [
        "started_at",
        "root",
        "created_count",
        "updated_count",
        "invalid_count",
        "missing_count",
        "skipped_count",
        "root_error",
    ]
    date_hierarchy = "started_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="skipped folders")
    def skipped_count(self, obj: DiscoveryScan) -> int:
        return len(obj.skipped_folders)


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Schedules from pipeline.json are read-only (git is law); the UI's are editable."""

    form = ScheduleForm
    list_display = ["__str__", "origin", "timing", "enabled", "next_fire_at", "last_fired_at"]
    list_filter = ["origin", "enabled"]
    search_fields = ["pipeline__name", "config_id"]
    list_select_related = ["pipeline"]
    raw_id_fields = ["pipeline"]
    readonly_fields = ["next_fire_at", "last_fired_at", "upcoming"]

    def get_fields(self, request: HttpRequest, obj: Schedule | None = None) -> list[str]:
        return [*ScheduleForm.Meta.fields, *self.readonly_fields]

    def has_change_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        if obj is not None and obj.origin == Schedule.Origin.FILE:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        if obj is not None and obj.origin == Schedule.Origin.FILE:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="when")
    def timing(self, schedule: Schedule) -> str:
        return schedule.describe()

    @admin.display(description="next five")
    def upcoming(self, schedule: Schedule) -> str:
        if not schedule.pk:
            return "—"
        return ", ".join(moment.isoformat() for moment in schedule.next_fire_times()) or "—"


@admin.register(WebhookKey)
class WebhookKeyAdmin(admin.ModelAdmin):
    """Keys are made on the pipeline page (shown once there); here they are listed and revoked."""

    list_display = ["__str__", "label", "created_at", "created_by", "last_used_at"]
    list_select_related = ["pipeline", "created_by"]
    search_fields = ["pipeline__name", "label", "prefix"]
    fields = ["pipeline", "label", "prefix", "created_at", "created_by", "last_used_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(GitSource)
class GitSourceAdmin(admin.ModelAdmin):
    """The pipeline repository. Credentials are write-only; the deploy key's public half is
    shown to copy."""

    form = GitSourceForm
    list_display = ["__str__", "auth", "updated_at"]
    readonly_fields = ["ssh_public_key", "updated_at"]
    actions = ["sync_now", "make_deploy_key", "forget_host_key"]

    def get_fields(self, request: HttpRequest, obj: GitSource | None = None) -> list[str]:
        return [
            "url",
            "branch",
            "subdir",
            "auth",
            "new_token",
            "new_webhook_secret",
            "ssh_public_key",
            "ssh_known_hosts",
            "updated_at",
        ]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        defaults = GitSource.load()
        return {"url": defaults.url, "branch": defaults.branch, "subdir": defaults.subdir}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not GitSource.objects.exists() and super().has_add_permission(request)

    @method_decorator(sensitive_post_parameters("new_token", "new_webhook_secret"))
    def changeform_view(self, request: HttpRequest, *args, **kwargs):
        return super().changeform_view(request, *args, **kwargs)

    @admin.action(description="Sync now", permissions=["change"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        try:
            request_sync(Sync.Trigger.MANUAL, request.user)
        except SyncNotRequested as problem:
            self.message_user(request, str(problem), messages.ERROR)
            return
        record(Action.SYNC_REQUESTED, GitSource.load())
        self.message_user(request, "Sync requested: the worker fetches the repository now.")

    @admin.action(description="Make a new SSH deploy key", permissions=["change"])
    def make_deploy_key(self, request: HttpRequest, queryset: QuerySet) -> None:
        for source in queryset:
            public = deploy_keys.generate(source)
            source.auth = GitSource.Auth.SSH
            source.save()
            record(Action.DEPLOY_KEY_MADE, source)
            self.message_user(request, f"New deploy key; add it to the repository: {public}")

    @admin.action(description="Forget the pinned SSH host key", permissions=["change"])
    def forget_host_key(self, request: HttpRequest, queryset: QuerySet) -> None:
        queryset.update(ssh_known_hosts="")
        record(Action.HOST_KEY_FORGOTTEN, GitSource.load())
        self.message_user(request, "The next SSH sync accepts and pins the server's host key.")


@admin.register(Sync)
class SyncAdmin(admin.ModelAdmin):
    list_display = ["started_at", "status", "trigger", "short_commit", "summary"]
    list_filter = ["status", "trigger"]
    search_fields = ["commit", "message", "error"]
    readonly_fields = [f.name for f in Sync._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Sync | None = None) -> bool:
        return False

    @admin.display(description="commit")
    def short_commit(self, sync: Sync) -> str:
        return sync.commit[:12]
