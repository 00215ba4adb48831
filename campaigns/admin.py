"""Admin for campaigns, segments, creatives and metrics: scoped by role, every write through a service.

Metric facts and ingestion batches are read-only here; metrics come in through ingestion,
which the MetricFact page offers as a CSV upload.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path

from accounts.admin_scoping import ReadOnlyScopedAdmin, WorkspaceScopedAdmin, adopt_saved, changed_values
from accounts.exceptions import ApplicationError
from accounts.models import Workspace
from accounts.roles import Perm
from accounts.selectors import admin_workspace_ids
from audit.admin_history import VersionHistoryAdminMixin

from . import services
from .exceptions import BatchRejected
from .ingestion import metrics_ingest_csv
from .models import Campaign, Creative, IngestionBatch, MetricFact, Segment

_RELATED_ONLY = admin.RelatedOnlyFieldListFilter  # lists only what the (scoped) changelist holds


class _ServiceBackedAdmin(WorkspaceScopedAdmin):
    """Saves and deletes through `<entity>_create/_update/_delete(*, actor, <subject>=...)`."""

    subject: str  # the keyword the update/delete services take the object by
    parent_field: str  # chosen on creation, never changed afterwards
    create_service = update_service = delete_service = None

    def get_readonly_fields(self, request, obj=None):
        fixed = [self.parent_field] if obj is not None else []
        return [*fixed, *super().get_readonly_fields(request, obj)]

    def save_model(self, request, obj, form, change):
        actor = self.actor(request)
        if change:
            type(self).update_service(actor=actor, **{self.subject: obj}, **changed_values(form))
        else:
            adopt_saved(obj, type(self).create_service(actor=actor, **form.cleaned_data))

    def delete_model(self, request, obj):
        type(self).delete_service(actor=self.actor(request), **{self.subject: obj})

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


class _CampaignChildInline(admin.TabularInline):
    """Segments or creatives edited on their campaign's page; permissions from the campaign's workspace."""

    extra = 0
    show_change_link = True
    create_service = update_service = delete_service = None
    subject: str

    def _may(self, request, perm, campaign) -> bool:
        if request.user.is_superuser:
            return True
        ids = admin_workspace_ids(request.user, perm)
        return bool(ids) if campaign is None else campaign.workspace_id in ids

    def has_view_permission(self, request, obj=None):
        return self._may(request, Perm.VIEW, obj)

    def has_add_permission(self, request, obj=None):
        return self._may(request, Perm.EDIT_CAMPAIGNS, obj)

    def has_change_permission(self, request, obj=None):
        return self._may(request, Perm.EDIT_CAMPAIGNS, obj)

    def has_delete_permission(self, request, obj=None):
        return self._may(request, Perm.EDIT_CAMPAIGNS, obj)

    def save_through_services(self, *, actor, campaign, formset) -> None:
        formset.save(commit=False)  # sorts the forms into new, changed and deleted objects
        for obj in formset.deleted_objects:
            type(self).delete_service(actor=actor, **{self.subject: obj})
        for obj, changed in formset.changed_objects:
            type(self).update_service(actor=actor, **{self.subject: obj}, **{n: getattr(obj, n) for n in changed})
        for obj in formset.new_objects:
            fields = {name: getattr(obj, name) for name in self.fields}
            adopt_saved(obj, type(self).create_service(actor=actor, campaign=campaign, **fields))


class SegmentInline(_CampaignChildInline):
    model = Segment
    subject = "segment"
    create_service = services.segment_create
    update_service = services.segment_update
    delete_service = services.segment_delete
    fields = ["name", "status", "criteria", "bid_floor", "bid", "bid_ceiling", "budget_floor", "daily_budget",
              "budget_ceiling", "external_id"]


class CreativeInline(_CampaignChildInline):
    model = Creative
    subject = "creative"
    create_service = services.creative_create
    update_service = services.creative_update
    delete_service = services.creative_delete
    fields = ["name", "headline", "call_to_action", "status", "rotation_order", "external_id"]


@admin.register(Campaign)
class CampaignAdmin(VersionHistoryAdminMixin, _ServiceBackedAdmin):
    subject = "campaign"
    parent_field = "workspace"
    create_service = services.campaign_create
    update_service = services.campaign_update
    delete_service = services.campaign_delete
    inlines = [SegmentInline, CreativeInline]
    list_display = ["name", "workspace", "channel", "objective", "status", "daily_budget", "metrics_latest_bucket",
                    "metrics_received_at", "data_quality"]
    list_filter = ["channel", "status", "objective", ("workspace", _RELATED_ONLY)]
    list_select_related = ["workspace"]
    search_fields = ["name", "external_id"]
    readonly_fields = ["metrics_received_at", "metrics_latest_bucket", "data_quality_flag", "created_at",
                       "updated_at"]
    fieldsets = [
        (None, {"fields": ["workspace", "name", "channel", "objective", "status", "external_id"]}),
        ("Budget and dates", {"fields": ["daily_budget", "start_date", "end_date"]}),
        ("Metrics", {"fields": ["metrics_received_at", "metrics_latest_bucket", "data_quality_flag"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="Data quality", boolean=True)
    def data_quality(self, campaign):
        return not campaign.data_quality_flag

    def save_formset(self, request, form, formset, change):
        inline = next(i for i in self.get_inline_instances(request, form.instance) if i.model is formset.model)
        inline.save_through_services(actor=self.actor(request), campaign=form.instance, formset=formset)


@admin.register(Segment)
class SegmentAdmin(VersionHistoryAdminMixin, _ServiceBackedAdmin):
    workspace_lookup = "campaign__workspace"
    subject = "segment"
    parent_field = "campaign"
    create_service = services.segment_create
    update_service = services.segment_update
    delete_service = services.segment_delete
    list_display = ["name", "campaign", "status", "bid", "bid_floor", "bid_ceiling", "daily_budget",
                    "budget_floor", "budget_ceiling"]
    list_filter = ["status", "campaign__channel", ("campaign", _RELATED_ONLY)]
    list_select_related = ["campaign"]
    search_fields = ["name", "external_id", "campaign__name"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["campaign", "name", "status", "criteria", "external_id"]}),
        ("Bid", {"fields": ["bid_floor", "bid", "bid_ceiling"]}),
        ("Daily budget", {"fields": ["budget_floor", "daily_budget", "budget_ceiling"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]


@admin.register(Creative)
class CreativeAdmin(VersionHistoryAdminMixin, _ServiceBackedAdmin):
    workspace_lookup = "campaign__workspace"
    subject = "creative"
    parent_field = "campaign"
    create_service = services.creative_create
    update_service = services.creative_update
    delete_service = services.creative_delete
    list_display = ["name", "campaign", "headline", "status", "rotation_order"]
    list_filter = ["status", ("campaign", _RELATED_ONLY)]
    list_select_related = ["campaign"]
    search_fields = ["name", "headline", "external_id", "campaign__name"]
    readonly_fields = ["created_at", "updated_at"]


class MetricCsvUploadForm(forms.Form):
    workspace = forms.ModelChoiceField(queryset=Workspace.objects.none())
    file = forms.FileField(help_text="UTF-8 CSV; header row: segment (or segment_external_id), creative, variant, "
                                     "bucket_start, then the counters (impressions, clicks, …, revenue, spend).")
    idempotency_key = forms.CharField(
        required=False, max_length=255,
        help_text="Optional: uploading again with the same key replays the first outcome instead of re-writing.",
    )

    def __init__(self, *args, workspaces, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["workspace"].queryset = workspaces


@admin.register(MetricFact)
class MetricFactAdmin(ReadOnlyScopedAdmin):
    list_display = ["bucket_start", "segment", "creative", "variant", "impressions", "clicks", "conversions",
                    "spend", "revenue", "ingested_at"]
    list_filter = [("workspace", _RELATED_ONLY), ("campaign", _RELATED_ONLY)]
    list_select_related = ["segment__campaign", "creative__campaign"]
    date_hierarchy = "bucket_start"
    ordering = ["-bucket_start"]
    show_full_result_count = False  # the table is large; counting it all on every page is not worth it

    def get_urls(self):
        upload = path("upload-csv/", self.admin_site.admin_view(self.upload_csv_view),
                      name="campaigns_metricfact_upload_csv")
        return [upload, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_upload_csv": self._push_workspaces(request).exists()}
        return super().changelist_view(request, extra_context)

    def _push_workspaces(self, request):
        if request.user.is_superuser:
            return Workspace.objects.all()
        return Workspace.objects.filter(pk__in=admin_workspace_ids(request.user, Perm.PUSH_METRICS))

    def upload_csv_view(self, request):
        workspaces = self._push_workspaces(request)
        if not workspaces.exists():
            raise PermissionDenied
        form = MetricCsvUploadForm(request.POST or None, request.FILES or None, workspaces=workspaces)
        rejection = None
        if request.method == "POST" and form.is_valid():
            try:
                result = metrics_ingest_csv(
                    actor=self.actor(request), workspace=form.cleaned_data["workspace"],
                    file=form.cleaned_data["file"], idempotency_key=form.cleaned_data["idempotency_key"],
                )
            except BatchRejected as error:
                rejection = {"message": error.message, "errors": _with_csv_lines(error.errors),
                             "error_count": error.error_count}
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                self.message_user(request, _outcome_message(result), messages.SUCCESS)
                return redirect("admin:campaigns_metricfact_changelist")
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": "Upload metrics (CSV)",
            "form": form, "rejection": rejection,
        }
        return TemplateResponse(request, "admin/campaigns/metricfact/upload_csv.html", context)


def _with_csv_lines(errors: list[dict]) -> list[dict]:
    # People read a CSV by line: line 1 is the header, so data row i is on line i + 2.
    return [{**error, "line": error["row"] + 2 if error["row"] is not None else None} for error in errors]


def _outcome_message(result) -> str:
    if result.replayed:
        return (f"This Idempotency-Key was already used for this file: nothing written again "
                f"({result.rows_received} rows, {result.rows_created} created, {result.rows_updated} updated).")
    return (f"{result.rows_received} rows ingested: {result.rows_created} created, {result.rows_updated} updated, "
            f"in {len(result.campaign_ids)} campaign(s).")


@admin.register(IngestionBatch)
class IngestionBatchAdmin(ReadOnlyScopedAdmin):
    list_display = ["created_at", "workspace", "source", "rows_received", "rows_created", "rows_updated",
                    "bucket_min", "bucket_max", "actor_label", "idempotency_key"]
    list_filter = ["source", ("workspace", _RELATED_ONLY)]
    list_select_related = ["workspace"]
    search_fields = ["idempotency_key", "actor_label"]
    date_hierarchy = "created_at"
