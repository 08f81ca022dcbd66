"""A stand-in SMSC on loopback for the fake provider's URL mode: it records every message
POSTed to it on arrival (the ground truth for loss and duplicate checks), then answers after
an optional delay, so a sender killed meanwhile loses the answer, not the message. The
fault-free case of ``tests.flaky_smsc.FlakySmsc``.
"""

from __future__ import annotations

from collections import Counter

from tests.flaky_smsc import Answer, Arrival, FlakySmsc


class FakeSmsc(FlakySmsc):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(lambda message: Answer(hold=delay or None))
        self.delay = delay

    @property
    def received(self) -> list[Arrival]:
        return self.seen()

    def counts(self) -> Counter[int]:
        return self.taken()
