"""Two transactions made to meet: one held open while another runs beside it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

# Long enough for the other side to do what it would do without waiting (a few queries);
# had it not waited, it is over by then.
PATIENCE_S = 1.0


class Beside:
    """`beside` run in a thread, given `patience` to finish: `waited` says whether it was still
    running then (waiting for what the caller holds open). Where it is meant not to wait, a
    longer patience keeps a slow machine from reading slowness as waiting. `finish` lets it
    end, after the caller has let go, and raises here what it raised."""

    def __init__(self, beside: Callable[[], object], patience: float = PATIENCE_S) -> None:
        self._failed: list[BaseException] = []

        def run() -> None:
            try:
                beside()
            except BaseException as exc:  # raised again by `finish`, not lost in the thread
                self._failed.append(exc)

        self._thread = threading.Thread(target=run)
        self._thread.start()
        self._thread.join(patience)
        self.waited = self._thread.is_alive()

    def finish(self) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive(), "still waiting 30 s after the other side let go"
        if self._failed:
            raise self._failed[0]


def while_open(held: Session, beside: Callable[[], object]) -> bool:
    """Run `beside` in a thread while `held`'s transaction is open; then commit `held`, and let
    `beside` finish. Returns whether `beside` was still waiting when `held` committed. What
    `beside` raised is raised here."""
    running = Beside(beside)
    held.commit()
    held.close()
    running.finish()
    return running.waited
