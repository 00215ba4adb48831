"""The admin app's config, pointing `admin.site` at the role-aware site (accounts.admin_site).

Listed in INSTALLED_APPS instead of "django.contrib.admin". Kept apart from accounts/apps.py,
where Django would take it for a second config of the accounts app, and free of model imports,
since it loads before the app registry is ready.
"""

from django.contrib.admin.apps import AdminConfig


class RulesPlatformAdminConfig(AdminConfig):
    default_site = "accounts.admin_site.RulesPlatformAdminSite"
