"""The shared gate keeps each site's controller and health in Redis on the wall clock, and this worker's
copy on its pacing clock: every time field moves by the offset on the way out and back on the way in,
containers keep their kind, and nothing else changes."""

from __future__ import annotations

from collections import deque

from imagecrawl.distributed.gate import _fields, _health_of, _shift_controller, _shift_health
from imagecrawl.pacing.bans import Verdict
from imagecrawl.pacing.gate import InProcessGate

OFFSET = 1_700_000_000.0


def test_controller_times_move_by_the_offset_and_back() -> None:
    state = InProcessGate().site("example.com", 100.0)
    controller = state.controller
    controller.on_success(101.0)
    controller.on_success(102.5)
    controller.note_pause(103.0, 105.0)
    controller.on_congestion("429", 104.0, 106.0)
    fields = _fields(controller)

    wall = _shift_controller(fields, OFFSET)
    for name in ("last_change", "last_cut", "srtt_at", "created"):
        assert wall[name] == float(fields[name]) + OFFSET, name
    assert isinstance(wall["_answers"], deque) and list(wall["_answers"]) == [101.0 + OFFSET, 102.5 + OFFSET]
    assert isinstance(wall["_pauses"], list) and wall["_pauses"] == [(103.0 + OFFSET, 105.0 + OFFSET)]
    untouched = fields.keys() - {"last_change", "last_cut", "srtt_at", "created", "_answers", "_pauses"}
    assert {k: wall[k] for k in untouched} == {k: fields[k] for k in untouched}
    assert fields["_answers"] == deque([101.0, 102.5]), "the controller's own deque was changed"

    back = _shift_controller(wall, -OFFSET)
    assert back == fields


def test_health_times_move_by_the_offset_and_the_streaks_are_copied() -> None:
    state = InProcessGate().site("example.com", 100.0)
    state.circuit.failed(100.0, 101.0, "refused")
    state.ban.on_verdict(Verdict.STATUS_403, 100.5, 102.0)
    fields = _health_of(state)
    assert fields["ban.streaks"], "the 403 left no streak: the test checks nothing about it"

    wall = _shift_health(fields, OFFSET)
    times = {"circuit.open_until", "circuit.probing_since", "ban.since", "ban.banned_until"}
    for name in times:
        assert wall[name] == float(fields[name]) + OFFSET, name
    assert {k: wall[k] for k in fields.keys() - times} == {k: fields[k] for k in fields.keys() - times}
    assert wall["ban.streaks"] is not fields["ban.streaks"]

    back = _shift_health(wall, -OFFSET)
    assert back == fields
    assert back["ban.streaks"] is not wall["ban.streaks"]
