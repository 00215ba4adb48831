"""The admin site: who may enter it is decided here, once, from workspace roles.

Django's `is_staff` flag is not used: a workspace admin can grant a marketer, approver or
admin role (roles allow Perm.USE_ADMIN), but has no way to flip flags on user accounts.
An integrator role never opens the admin, whatever `is_staff` says; superusers always may.
"""

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .selectors import may_use_admin, memberships_of


class RoleAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": _(
            "Please enter the correct %(username)s and password of an account with admin access "
            "(a marketer, approver or workspace admin role). Both fields may be case-sensitive."
        ),
    }

    def confirm_login_allowed(self, user):
        # Skips AdminAuthenticationForm's is_staff test on purpose (see the module docstring).
        AuthenticationForm.confirm_login_allowed(self, user)
        if not may_use_admin(user):
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


class RulesPlatformAdminSite(admin.AdminSite):
    site_header = "Rules platform"
    site_title = "Rules platform"
    index_title = "Today's work"
    login_form = RoleAuthenticationForm

    def has_permission(self, request):
        return may_use_admin(request.user)

    def each_context(self, request):
        context = super().each_context(request)
        if request.user.is_authenticated:
            # Shown in the header so people always know which accounts and roles they act in.
            context["my_memberships"] = list(memberships_of(request.user).order_by("workspace__name"))
        return context
