"""Number formats of the dashboards and the "today" panel of the admin index."""

from django import template

from rulesplatform import dashboard_selectors as sel

register = template.Library()


@register.filter
def pct(value, digits: int = 2) -> str:
    """A rate between 0 and 1 as a percentage: 0.01234 -> "1.23%"; "—" when there is none."""
    return "—" if value is None else f"{value * 100:.{digits}f}%"


@register.filter
def money(value) -> str:
    return "—" if value is None else f"{value:,.2f}"


@register.filter
def times(value) -> str:
    return "—" if value is None else f"{value:.2f}×"


@register.filter
def signed_pct(value) -> str:
    return "—" if value is None else f"{value:+.1f}%"


@register.filter
def metric_value(value, metric: str) -> str:
    """A value of a dashboard metric, in that metric's unit."""
    if metric in ("cvr", "ctr"):
        return pct(value)
    if metric == "roas":
        return times(value)
    return money(value)


@register.inclusion_tag("admin/dashboards/_today.html", takes_context=True)
def today_panel(context):
    """The marketer's tasks of the day, for the admin index (scoped to the person's workspaces)."""
    return sel.today(context["request"].user)
