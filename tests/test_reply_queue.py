"""The ordered reply queue on its own, without sockets (as h11 tests its state)."""

from __future__ import annotations

import itertools

from spike.server._replies import ReplyQueue, Slot


def slot(name: str) -> Slot:
    return Slot(name, name, 0.0, on_worker=True)


def test_nothing_owed_is_false_and_releases_nothing() -> None:
    queue = ReplyQueue()
    assert not queue and queue.release() == [] and queue.pending() == []


EXPECTED = [b"reply0\n", b"text-a\n", b"reply1\n", b"reply2\n", b"text-b\n"]
# How many replies can have left while the slot of op N is the first still owed.
HEAD_LEN = {0: 0, 1: 2, 2: 3, 3: 5}


def test_replies_leave_in_request_order_whatever_order_ops_finish_in() -> None:
    """Every order in which three ops can finish, with replies made at once
    between them: what leaves is always the request order, as soon as it can."""
    for order in itertools.permutations(range(3)):
        queue = ReplyQueue()
        slots = [slot(f"op{n}") for n in range(3)]
        queue.reserve(slots[0])
        queue.add(b"text-a\n")
        queue.reserve(slots[1])
        queue.reserve(slots[2])
        queue.add(b"text-b\n")
        assert queue.in_flight == 3 and queue.waiting_bytes == 14
        sent: list[bytes] = []
        for n in order:
            assert queue.fill(slots[n], f"reply{n}\n".encode())
            sent += queue.release()
            # Nothing leaves ahead of a reply still owed.
            owed = [s for s in slots if s.data is None]
            if owed:
                assert len(sent) < 5
            # Exactly what is complete from the head has left, in order.
            first_owed = next((n for n, s in enumerate(slots) if s.data is None), 3)
            assert sent == EXPECTED[: HEAD_LEN[first_owed]], (order, sent)
        assert sent == EXPECTED, order
        assert not queue and queue.in_flight == 0 and queue.waiting_bytes == 0


def test_a_late_result_after_a_timeout_is_refused() -> None:
    queue = ReplyQueue()
    late = slot("slow")
    queue.reserve(late)
    assert queue.fill(late, b"op_timeout\n")
    assert queue.release() == [b"op_timeout\n"]
    assert not queue.fill(late, b"the real result\n")  # dropped: already answered
    assert queue.release() == []


def test_clear_returns_the_slots_still_running() -> None:
    queue = ReplyQueue()
    done, running = slot("done"), slot("running")
    queue.reserve(running)
    queue.reserve(done)
    queue.fill(done, b"x\n")
    assert queue.clear() == [running]
    assert not queue and queue.in_flight == 0 and queue.waiting_bytes == 0
