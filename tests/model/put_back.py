"""Put a defect of issue 13 back into the working tree, to check that the model-based test
finds it (issue 13, point 11). It edits ``portal/`` in place: run it on a clean checkout and
undo it with ``git checkout -- portal``.

    .venv/bin/python -m tests.model.put_back 1   # or 4, or 6
    PORTAL_MODEL_SHRINK=0 .venv/bin/pytest -p no:randomly tests/model -k licence_loop
    git checkout -- portal

1. the starting quantity of a change is the one recorded when it was asked for (the target of
   the changes then in flight), not the provider's quantity before it;
4. a change of a subscription whose purchase failed hits an assertion on every attempt, and
   nothing fails it when the outbox gives up (it stays "provisioning");
6. the credit hold is not checked when a queued change goes out.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROVISIONING = Path("portal/features/licences/services/provisioning.py")
SUBSCRIPTIONS = Path("portal/features/licences/services/subscriptions.py")

EDITS: dict[str, list[tuple[Path, str, str]]] = {
    "1": [(PROVISIONING, "quantity_from=work.quantity_before,", "")],
    "4": [
        (
            PROVISIONING,
            "return BusinessRejection(NOT_BOUGHT_REASON, code=NOT_BOUGHT_CODE)",
            "raise AssertionError('no provider reference')",
        ),
        (PROVISIONING, "if item.attempts < item.max_attempts:\n            raise", "raise"),
        (SUBSCRIPTIONS, "failed = fail_abandoned(session)", "failed: list[LicenceChange] = []"),
    ],
    "6": [
        (
            PROVISIONING,
            "state=case((_HELD, ChangeState.AWAITING.value), else_=ChangeState.PROVISIONING.value)",
            "state=ChangeState.PROVISIONING.value",
        ),
        (
            PROVISIONING,
            "hold_reason=case((_HELD, HoldReason.CREDIT_HOLD.value), else_=None)",
            "hold_reason=None",
        ),
        (
            PROVISIONING,
            "attempts=case((_HELD, _change.c.attempts), else_=_change.c.attempts + 1)",
            "attempts=_change.c.attempts + 1",
        ),
    ],
}


def put_back(defect: str) -> None:
    for path, fixed, broken in EDITS[defect]:
        text = path.read_text()
        if fixed not in text:
            raise SystemExit(f"{path}: the fix of defect {defect} is not where it was ({fixed!r})")
        path.write_text(text.replace(fixed, broken))


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in EDITS:
        raise SystemExit(f"usage: python -m tests.model.put_back {{{','.join(EDITS)}}}")
    put_back(sys.argv[1])
