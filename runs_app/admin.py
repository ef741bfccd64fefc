"""Run history in the operator console: read-only, because a run's record is evidence."""

from __future__ import annotations

import json

import apprise
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from fastflow_site.audit import Action, record
from pipelines_app.admin import PipelineAdmin as CataloguePipelineAdmin
from pipelines_app.models import Pipeline
from pipelines_app.sizes import format_size
from runs_app import notify
from runs_app.models import (
    ChainLink,
    Channel,
    Chore,
    Daemon,
    Delivery,
    DependencyCheck,
    EnvironmentLock,
    Incident,
    Notification,
    PipelineRun,
    Rule,
    RunRefused,
    RunStep,
    ScheduleSkip,
    Vulnerability,
    WorkerNode,
    WorkerProcess,
)
from runs_app.stored_logs import extent
from runs_app.warmup import request_warmups
from secrets_app.forms import WriteOnlySecretForm, write_only_input

admin.site.unregister(Pipeline)


class RecordAdmin(admin.ModelAdmin):
    """Records of what happened are evidence: nobody adds or edits them here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class RunStepInline(admin.TabularInline):
    """A models run's steps (models, seeds, snapshots, tests), as the engine reported them."""

    model = RunStep
    fields = ["kind", "name", "status", "tested", "started_at", "seconds", "rows", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Pipeline)
class PipelineAdmin(CataloguePipelineAdmin):
    """The catalogue's pipeline admin, with the actions that start something."""

    actions = ["run_now", "warm_dependencies", *CataloguePipelineAdmin.actions]

    @admin.action(description="Run the selected pipelines now", permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Pipeline]) -> None:
        for pipeline in queryset:
            try:
                run = PipelineRun.start(pipeline, by=request.user)
            except RunRefused as exc:
                hint = (
                    ": start it from its page, which asks to confirm"
                    if exc.kind == "disabled"
                    else ""
                )
                self.message_user(request, exc.describe() + hint, messages.ERROR)
                continue
            self.message_user(request, f"Run {run.short_id} of {pipeline.name} queued.")

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs_app.add_pipelinerun")

    @admin.action(description="Warm dependencies", permissions=["run"])
    def warm_dependencies(self, request: HttpRequest, queryset: QuerySet[Pipeline]) -> None:
        names = list(queryset.values_list("name", flat=True))
        marked = request_warmups(names, force=True)
        self.message_user(request, f"{marked} pipeline(s) queued to warm their dependencies.")


@admin.register(PipelineRun)
class PipelineRunAdmin(RecordAdmin):  # runs are started, not typed in
    inlines = [RunStepInline]
    list_display = [
        "short_id",
        "pipeline_link",
        "status",
        "failure_reason",
        "exit_code",
        "trigger",
        "attempt",
        "queued_at",
        "duration_display",
    ]
    list_filter = ["status", "failure_reason", "trigger", "queued_at"]
    list_select_related = ["pipeline", "triggered_by"]
    search_fields = ["=public_id", "pipeline__name", "git_commit", "container_id"]
    date_hierarchy = "queued_at"
    raw_id_fields = ["pipeline", "triggered_by", "retry_of"]
    show_full_result_count = False  # COUNT(*) over 100k+ runs on every page view adds up
    actions = ["cancel_runs", "rerun"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "public_id",
                    "pipeline_link",
                    "status",
                    "failure_reason",
                    "error_message",
                    "exit_code",
                ]
            },
        ),
        ("Trigger", {"fields": ["trigger", "triggered_by", "attempt", "retry_of_link"]}),
        (
            "Follower",
            {
                "fields": [
                    "claimed_at",
                    "dispatched_at",
                    "worker_id",
                    "heartbeat_at",
                    "cancel_requested_at",
                ]
            },
        ),
        (
            "Timing",
            {"fields": ["queued_at", "started_at", "finished_at", "setup_duration"]},
        ),
        (
            "Execution",
            {
                "fields": [
                    "git_commit",
                    "uv_version",
                    "environment_lock",
                    "executor",
                    "container_id",
                    "stored_log",
                    "environment_display",
                    "secret_env_names",
                    "parameters_display",
                ]
            },
        ),
        ("Resources", {"fields": ["peak_cpu_percent", "peak_memory", "limit_warnings"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[PipelineRun]) -> None:
        outcomes = {"cancelled": 0, "stopping": 0, "finished": 0}
        for run in queryset:
            outcomes[run.cancel(by=request.user)] += 1
        self.message_user(
            request,
            f"{outcomes['cancelled']} queued run(s) cancelled, {outcomes['stopping']} running "
            f"run(s) being stopped, {outcomes['finished']} had already ended.",
        )

    @admin.action(description="Run the selected runs' pipelines again", permissions=["rerun"])
    def rerun(self, request: HttpRequest, queryset: QuerySet[PipelineRun]) -> None:
        for run in queryset.select_related("pipeline"):
            try:
                new = run.rerun(by=request.user)
            except RunRefused as exc:
                self.message_user(request, exc.describe(), messages.ERROR)
                continue
            self.message_user(request, f"Run {new.short_id} of {run.pipeline} queued.")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs_app.change_pipelinerun")

    def has_rerun_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs_app.add_pipelinerun")

    @admin.display(description="run", ordering="public_id")
    def short_id(self, obj: PipelineRun) -> str:
        return obj.short_id

    @admin.display(description="pipeline", ordering="pipeline__name")
    def pipeline_link(self, obj: PipelineRun) -> str:
        url = reverse("admin:pipelines_app_pipeline_change", args=[obj.pipeline_id])
        return format_html('<a href="{}">{}</a>', url, obj.pipeline.name)

    @admin.display(description="retry of")
    def retry_of_link(self, obj: PipelineRun) -> str:
        if obj.retry_of_id is None:
            return "—"
        url = reverse("admin:runs_app_pipelinerun_change", args=[obj.retry_of_id])
        return format_html('<a href="{}">{}</a>', url, obj.retry_of_id)

    @admin.display(description="duration")
    def duration_display(self, obj: PipelineRun) -> str:
        duration = obj.duration
        return "—" if duration is None else f"{duration.total_seconds():.1f} s"

    @admin.display(description="peak memory")
    def peak_memory(self, obj: PipelineRun) -> str:
        return format_size(obj.peak_memory_bytes)

    @admin.display(description="log")
    def stored_log(self, obj: PipelineRun) -> str:
        if obj.log_removed_at:
            return f"removed by retention on {obj.log_removed_at:%Y-%m-%d}"
        lines, size = extent(obj.pk)
        return f"{lines} line(s), {format_size(size)} in the database"

    @admin.display(description="environment (no secrets)")
    def environment_display(self, obj: PipelineRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.environment, indent=2, sort_keys=True))

    @admin.display(description="parameters")
    def parameters_display(self, obj: PipelineRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.parameters, indent=2, sort_keys=True))


@admin.register(ScheduleSkip)
class ScheduleSkipAdmin(RecordAdmin):
    """Due times that queued no run, and why: evidence, so read-only."""

    list_display = ["schedule", "due_at", "reason", "waiting_run", "recorded_at"]
    list_filter = ["reason", "due_at"]
    list_select_related = ["schedule__pipeline", "waiting_run__pipeline"]
    raw_id_fields = ["schedule", "waiting_run"]
    search_fields = ["schedule__pipeline__name", "schedule__config_id"]


@admin.register(EnvironmentLock)
class EnvironmentLockAdmin(RecordAdmin):
    """What warm-ups installed, per pipeline and environment: the locks runs install."""

    list_display = ["pipeline", "short_hash", "package_count", "created_at"]
    list_select_related = ["pipeline"]
    search_fields = ["pipeline__name", "sha256"]
    readonly_fields = ["pipeline", "environment_key", "sha256", "packages_display", "created_at"]
    exclude = ["packages"]

    @admin.display(description="packages")
    def package_count(self, obj: EnvironmentLock) -> int:
        return len(obj.packages)

    @admin.display(description="packages")
    def packages_display(self, obj: EnvironmentLock) -> str:
        return format_html("<pre>{}</pre>", obj.text)


@admin.register(WorkerNode)
class WorkerNodeAdmin(RecordAdmin):
    """Worker nodes as their heartbeats describe them; drain one (no new runs, current ones
    finish) or let it take runs again."""

    list_display = [
        "name",
        "alive",
        "draining",
        "labels",
        "capacity",
        "in_flight",
        "pool",
        "engine",
        "executors",
    ]
    readonly_fields = ["name", "labels", "capacity", "engine", "executors", "pool", "seen_at",
                       "draining", "drained_at", "drained_by"]  # fmt: skip
    actions = ["drain", "resume"]

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: WorkerNode) -> bool:
        return obj.is_alive

    @admin.display(description="runs in flight")
    def in_flight(self, obj: WorkerNode) -> int:
        return PipelineRun.followed_on(obj).count()

    @admin.action(description="Drain the selected nodes", permissions=["drain"])
    def drain(self, request: HttpRequest, queryset: QuerySet[WorkerNode]) -> None:
        for node in queryset:
            node.drain(by=request.user.get_username())
            record(Action.NODE_DRAINED, node)
        self.message_user(request, "Drained: they take no new runs; current ones finish.")

    @admin.action(description="Let the selected nodes take runs again", permissions=["drain"])
    def resume(self, request: HttpRequest, queryset: QuerySet[WorkerNode]) -> None:
        for node in queryset:
            node.resume()
            record(Action.NODE_RESUMED, node)
        self.message_user(request, "They take runs again.")

    def has_drain_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs_app.change_workernode")


@admin.register(WorkerProcess)
class WorkerProcessAdmin(RecordAdmin):
    """The worker processes that report in: whether they reach the Docker engine, and
    whether their threads and loops are well (a degraded one says why)."""

    list_display = ["name", "started_at", "seen_at", "alive", "health", "engine_ok", "engine_error"]
    readonly_fields = ["threads_display"]
    exclude = ["threads"]

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: WorkerProcess) -> bool:
        return obj.is_alive

    @admin.display(description="health")
    def health(self, obj: WorkerProcess) -> str:
        return obj.health

    @admin.display(description="threads")
    def threads_display(self, obj: WorkerProcess) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.threads, indent=2))


@admin.register(ChainLink)
class ChainLinkAdmin(RecordAdmin):
    """What each run's end started (or why not): evidence, so read-only."""

    list_display = ["upstream", "condition", "target_name", "downstream", "skipped_reason"]
    list_select_related = ["upstream__pipeline", "downstream__pipeline"]
    raw_id_fields = ["upstream", "downstream"]
    search_fields = ["target_name", "upstream__pipeline__name"]


@admin.register(Daemon)
class DaemonAdmin(admin.ModelAdmin):
    """Daemons (restart_on_crash) and their supervision; only "paused" is for people."""

    list_display = ["pipeline", "paused", "restarts", "last_exit", "start_not_before"]
    list_filter = ["paused"]
    readonly_fields = [
        "pipeline",
        "restarts",
        "crash_times",
        "start_not_before",
        "next_restart_at",
        "stopping_reason",
        "accounted_run",
        "last_exit",
        "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


# --- notifications ---------------------------------------------------------------------------


class ChannelForm(WriteOnlySecretForm):
    url = forms.CharField(
        label="Apprise URL",
        required=False,
        strip=True,
        widget=write_only_input(),
        help_text="e.g. mailto://user:pw@mail.example.com?to=ops@example.com, "
        "slack://T0/B0/XYZ, msteams://…, discord://id/token, mmost://host/token, "
        "json://host/path. Stored encrypted, never shown again; empty keeps the stored one.",
    )

    write_only_field = "url"
    missing_message = "A new channel needs its URL."

    class Meta:
        model = Channel
        fields = ["name", "enabled"]

    def clean(self) -> dict:
        cleaned = super().clean()
        url = cleaned.get("url")
        if url and not apprise.Apprise().add(url):
            self.add_error("url", "apprise does not understand this URL; see its list of services.")
        return cleaned

    def has_stored_secret(self) -> bool:
        return bool(self.instance.url_encrypted)

    def store_secret(self, instance: Channel, value: str) -> None:
        instance.set_url(value)


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ["name", "kind", "origin", "enabled", "failing", "last_success_at",
                    "last_failure_at", "last_error"]  # fmt: skip
    list_filter = ["enabled", "origin"]
    readonly_fields = ["origin", "kind", "failures_total", "consecutive_failures",
                       "last_success_at", "last_failure_at", "last_error"]  # fmt: skip
    actions = ["send_test_message"]

    def get_fields(self, request: HttpRequest, obj: Channel | None = None) -> list[str]:
        return ["name", "url", "enabled", *self.readonly_fields]

    def has_change_permission(self, request: HttpRequest, obj: Channel | None = None) -> bool:
        settings_made = obj is not None and obj.origin == Channel.Origin.SETTINGS
        return not settings_made and super().has_change_permission(request, obj)

    @admin.display(description="failing", boolean=True)
    def failing(self, channel: Channel) -> bool:
        return channel.is_failing

    @method_decorator(sensitive_post_parameters("url"))
    def changeform_view(self, request: HttpRequest, *args, **kwargs):
        return super().changeform_view(request, *args, **kwargs)

    @admin.action(description="Send a test message")
    def send_test_message(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        for channel in queryset:
            notify.test_message(channel)
        self.message_user(
            request,
            f"{queryset.count()} test message(s) queued: the worker sends them within seconds; "
            "see Notifications for the outcome.",
        )


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "origin", "events", "pipelines", "tags"]
    filter_horizontal = ["channels"]

    def has_change_permission(self, request: HttpRequest, obj: Rule | None = None) -> bool:
        settings_made = obj is not None and obj.origin == Channel.Origin.SETTINGS
        return not settings_made and super().has_change_permission(request, obj)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ["channel_name", "status", "attempts", "sent_at", "next_attempt_at", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(RecordAdmin):
    list_display = ["created_at", "event", "title", "pipeline", "delivered"]
    list_filter = ["event", ("pipeline", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["title", "body"]
    list_select_related = ["pipeline"]
    raw_id_fields = ["run", "incident", "pipeline"]
    inlines = [DeliveryInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        return super().get_queryset(request).prefetch_related("deliveries")

    @admin.display(description="deliveries")
    def delivered(self, notification: Notification) -> str:
        return ", ".join(f"{d.channel_name}: {d.status}" for d in notification.deliveries.all())


@admin.register(Incident)
class IncidentAdmin(RecordAdmin):
    list_display = ["subject", "kind", "opened_at", "events_count", "told_count", "closed_at"]
    list_filter = ["kind", ("closed_at", admin.EmptyFieldListFilter)]


@admin.register(Chore)
class ChoreAdmin(RecordAdmin):
    """The workers' daily chores (retention): when they last ran, what they did, or why not."""

    list_display = ["name", "last_started_at", "last_finished_at", "last_report", "last_error"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(DependencyCheck)
class DependencyCheckAdmin(RecordAdmin):
    list_display = ["pipeline", "status", "packages", "checked_at", "error"]
    list_filter = ["status"]
    list_select_related = ["pipeline"]


@admin.register(Vulnerability)
class VulnerabilityAdmin(RecordAdmin):
    list_display = ["pipeline", "package", "version", "advisory_id", "fixed_in", "first_seen_at"]
    list_filter = [("pipeline", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["package", "advisory_id", "aliases"]
    list_select_related = ["pipeline"]
