"""The fields a change may set on its target, and how their values are read, compared and stored.

A change stores its values as canonical strings (one column fits every field): money with
exactly four decimals (the precision of the database columns), statuses and rotation orders
as written. Compare-and-set compares these strings, so they must be canonical on both sides.
"""

from dataclasses import dataclass
from decimal import Decimal

from campaigns.models import Campaign, Creative, Segment

from .models import Change

QUANTUM = Decimal("0.0001")
Target = Segment | Creative | Campaign
Value = Decimal | str | int


@dataclass(frozen=True)
class FieldSpec:
    attr: str
    parse: type
    numeric: bool


FIELDS: dict[str, FieldSpec] = {
    Change.Field.BID: FieldSpec("bid", Decimal, numeric=True),
    Change.Field.DAILY_BUDGET: FieldSpec("daily_budget", Decimal, numeric=True),
    Change.Field.STATUS: FieldSpec("status", str, numeric=False),
    Change.Field.ROTATION_ORDER: FieldSpec("rotation_order", int, numeric=False),
}
TARGET_MODELS: dict[str, type[Target]] = {"segment": Segment, "creative": Creative, "campaign": Campaign}


def target_type(target: Target) -> str:
    """"segment", "creative" or "campaign": the name of the Change column that points at it."""
    return target._meta.model_name


def read_value(target: Target, field: str) -> Value:
    return getattr(target, FIELDS[field].attr)


def parse_value(field: str, text: str) -> Value:
    return FIELDS[field].parse(text)


def format_value(value: Value) -> str:
    if isinstance(value, Decimal):
        return str(value.quantize(QUANTUM))
    return str(value)


def is_numeric(field: str) -> bool:
    return FIELDS[field].numeric


def bounds(target: Target, field: str) -> tuple[Decimal | None, Decimal | None]:
    """The floor and ceiling the target itself sets on a numeric field."""
    if isinstance(target, Segment):
        if field == Change.Field.BID:
            return target.bid_floor, target.bid_ceiling
        return target.budget_floor, target.budget_ceiling
    return Decimal(0), None  # a campaign's budget: never negative, no ceiling of its own
