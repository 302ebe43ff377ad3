"""How right a timeline of several people is against known truth: which true person each followed id is, how often
an id jumps from one true person to another (identity switches), whether a person who left was given their id back
on return, and each person's frame-level accuracy and boundary error (`timeline_accuracy`), where a window in which
the person is off screen counts as right when marked absent."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .timeline_accuracy import Span, TimelineAccuracy, timeline_accuracy


ABSENT = "absent"
NOT_SEEN = ("absent", "no_face")  # a person's timeline says they are not there


@dataclass
class PeopleAccuracy:
    identity: dict[str, str]  # followed id -> the true person it showed most
    switches: dict[str, int]  # true person -> changes of followed id over the windows showing them
    relinked: dict[str, bool]  # true person -> the same id after each absence as before it
    accuracy: dict[str, TimelineAccuracy]  # true person -> their timeline against their truth

    @property
    def identity_switches(self) -> int:
        return sum(self.switches.values())


def people_accuracy(
    windows: Sequence[tuple[str, float, Sequence[float] | None]],
    segments: Sequence[tuple[str, float, float, str]],
    truth: dict[str, Sequence[Span]],
    who: Callable[[Sequence[float], float], str | None],
    frame_times: np.ndarray,
) -> PeopleAccuracy:
    """`windows`: `(followed id, time, crop box or None)` (the box of the window's middle frame); `segments`:
    `(followed id, start, end, decision)`; `truth`: each true person's spans (`ABSENT` where off screen); `who(point,
    time)`: the true person whose face holds `point` at `time`; `frame_times`: the recording's frames."""
    shown: dict[str, list[tuple[float, str]]] = {}  # true person -> (time, followed id)
    votes: dict[str, dict[str, int]] = {}
    for person, time, box in windows:
        if box is None:
            continue
        true = who(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), time)
        if true is None:
            continue
        shown.setdefault(true, []).append((time, person))
        votes.setdefault(person, {}).setdefault(true, 0)
        votes[person][true] += 1
    identity = {person: max(counts, key=counts.get) for person, counts in votes.items()}
    switches, relinked = {}, {}
    for true, spans in truth.items():
        sequence = [person for _, person in sorted(shown.get(true, []))]
        switches[true] = sum(a != b for a, b in zip(sequence, sequence[1:], strict=False))
        relinked[true] = all(_same_id_around(shown.get(true, []), start, end) for start, end, label in spans if
                             label == ABSENT and start > 0 and end < max(e for _, e, _ in spans))  # fmt: skip
    accuracy = {}
    for true in truth:
        followed = [person for person, name in identity.items() if name == true]
        predicted = [
            (start, end, ABSENT if decision in NOT_SEEN else decision)
            for person, start, end, decision in segments
            if followed and person == followed[0]
        ]
        accuracy[true] = timeline_accuracy(predicted or [(0.0, float("inf"), ABSENT)], truth[true], frame_times)
    return PeopleAccuracy(identity, switches, relinked, accuracy)


def _same_id_around(shown: list[tuple[float, str]], start: float, end: float) -> bool:
    """Whether the last id before an absence `[start, end)` is the first after it."""
    before = [person for time, person in sorted(shown) if time < start]
    after = [person for time, person in sorted(shown) if time >= end]
    return bool(before) and bool(after) and before[-1] == after[0]
