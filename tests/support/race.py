"""Two transactions made to meet: one held open while another runs beside it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

# Long enough for the other side to do what it would do without waiting (a few queries);
# had it not waited, it is over by then.
PATIENCE_S = 1.0


def while_open(held: Session, beside: Callable[[], object]) -> bool:
    """Run `beside` in a thread while `held`'s transaction is open; then commit `held`, and let
    `beside` finish. Returns whether `beside` was still waiting when `held` committed. What
    `beside` raised is raised here."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            beside()
        except BaseException as exc:  # raised again below, not lost in the thread
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(PATIENCE_S)
    waited = thread.is_alive()
    held.commit()
    held.close()
    thread.join(30)
    assert not thread.is_alive(), "still waiting 30 s after the other transaction committed"
    if failed:
        raise failed[0]
    return waited
