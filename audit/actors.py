"""Who did something: a person, an integrator's API token, a worker or the system itself."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    kind: str  # "user" | "token" | "worker" | "system"
    label: str
    user: Any = None
    token_id: int | None = None

    @classmethod
    def for_user(cls, user) -> "Actor":
        return cls(kind="user", label=user.get_username(), user=user)

    @classmethod
    def for_token(cls, token) -> "Actor":
        return cls(kind="token", label=f"token:{token.prefix}", user=token.user, token_id=token.pk)

    @classmethod
    def worker(cls, task_name: str) -> "Actor":
        return cls(kind="worker", label=f"worker:{task_name}")

    @classmethod
    def system(cls, what: str) -> "Actor":
        return cls(kind="system", label=f"system:{what}")

    @property
    def user_id(self) -> int | None:
        return getattr(self.user, "pk", None)
