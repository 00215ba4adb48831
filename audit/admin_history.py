"""The admin's "History" page of a versioned object, as versions: who, why, when, a diff
between any two, and a restore (with a reason) of an earlier one.

Add `VersionHistoryAdminMixin` first in the bases of a model's admin. It relies on that
admin's own scoping: the object is fetched through `get_object` (the admin's scoped
queryset) and the page needs the admin's view permission; restoring needs its change
permission, then `version_restore` applies the domain's own rights.
"""

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse

from .actors import Actor
from .exceptions import RestoreError
from .rollback import version_restore
from .selectors import object_history, version_diff, version_info


class VersionHistoryAdminMixin:
    version_history_template = "admin/audit/version_history.html"

    def history_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with id {object_id} in your workspaces.")
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        # The object is visible to this person, so its whole history is.
        versions = list(object_history(self.model, obj.pk, workspace_ids=None))
        if request.method == "POST":
            return self._restore_from_history(request, obj, versions)
        return TemplateResponse(request, self.version_history_template, {
            **self.admin_site.each_context(request),
            "title": f"History of {obj}",
            "subtitle": None,
            "opts": self.opts,
            "object": obj,
            "rows": [{"version": v, "info": version_info(v)} for v in versions],
            "diff": _requested_diff(request, versions),
            "can_restore": self.has_change_permission(request, obj),
            **(extra_context or {}),
        })

    def _restore_from_history(self, request, obj, versions):
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        chosen = _pick(versions, request.POST.get("version"))
        if chosen is None:
            messages.error(request, "Choose a version of this object to restore.")
            return HttpResponseRedirect(request.get_full_path())
        try:
            version_restore(actor=Actor.for_user(request.user), version=chosen, reason=request.POST.get("reason", ""))
        except (RestoreError, ValidationError) as error:
            messages.error(request, getattr(error, "message", None) or "; ".join(error.messages))
            return HttpResponseRedirect(request.get_full_path())
        messages.success(request, f"Version #{chosen.pk} of {obj} restored as a new version.")
        return HttpResponseRedirect(request.path)


def _pick(versions, version_id):
    return next((v for v in versions if str(v.pk) == str(version_id)), None)


def _requested_diff(request, versions) -> dict | None:
    """?from=&to= picks the pair; by default the newest version against the one before it."""
    old, new = _pick(versions, request.GET.get("from")), _pick(versions, request.GET.get("to"))
    if old is None or new is None:
        if len(versions) < 2:
            return None
        new, old = versions[0], versions[1]
    return {"old": old, "new": new, **version_diff(old, new)}
