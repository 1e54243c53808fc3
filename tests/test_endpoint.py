"""The endpointer: utterance start and end over per-frame voice verdicts."""

from __future__ import annotations

from stt_service.session.endpoint import Endpointer, EndpointEvent


# --- Endpointer -----------------------------------------------------------------------------------
def run(ep: Endpointer, flags: list[bool]) -> list[tuple[int, EndpointEvent]]:
    return [(k, ev) for k, f in enumerate(flags) if (ev := ep.step(f)) is not None]


def test_endpointer_counts() -> None:
    ep = Endpointer(frame_ms=30, hangover_ms=300)
    assert ep.start_frames == 3
    assert ep.hangover_frames == 10


def test_endpointer_starts_after_three_voiced_frames_and_ends_after_the_hangover() -> None:
    ep = Endpointer(frame_ms=30, hangover_ms=300)
    flags = [True, True, True] + [False] * 9 + [True] + [False] * 10 + [False] * 5
    assert run(ep, flags) == [(2, EndpointEvent.START), (22, EndpointEvent.END)]
    assert not ep.in_speech


def test_endpointer_start_needs_voiced_frames_within_the_window() -> None:
    ep = Endpointer(frame_ms=30, hangover_ms=300)
    # voiced, not consecutive, but 3 within 10 frames
    assert run(ep, [True, False, False, True, False, False, False, True]) == [
        (7, EndpointEvent.START)
    ]
    # one voiced frame every 5: never 3 within a 300 ms window
    ep = Endpointer(frame_ms=30, hangover_ms=300)
    assert run(ep, ([True] + [False] * 4) * 20) == []
    assert not ep.in_speech


def test_endpointer_hangover_in_ms_depends_on_frame_length() -> None:
    ep = Endpointer(frame_ms=10, hangover_ms=800)
    assert ep.hangover_frames == 80
    assert ep.start_frames == 9
    events = run(ep, [True] * 9 + [False] * 80)
    assert events == [(8, EndpointEvent.START), (88, EndpointEvent.END)]


def test_endpointer_restarts_after_reset() -> None:
    ep = Endpointer(frame_ms=30, hangover_ms=300)
    assert run(ep, [True, True, True]) == [(2, EndpointEvent.START)]
    ep.reset()
    assert not ep.in_speech
    assert run(ep, [True, True, True]) == [(2, EndpointEvent.START)]


def test_disabled_endpointer_starts_at_the_first_frame_and_never_ends() -> None:
    ep = Endpointer(frame_ms=30, hangover_ms=300, enabled=False)
    events = run(ep, [False] + [False] * 500 + [True] * 10 + [False] * 500)
    assert events == [(0, EndpointEvent.START)]
    assert ep.in_speech
