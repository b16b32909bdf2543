"""The ledger: every create call is recorded before it is made, and closed when destroyed."""

from __future__ import annotations

from launcher.backends.vast.ledger import CREATED, CREATING, DESTROYED, NOT_CREATED, OUTBID, Ledger


def test_row_is_creating_then_created_then_destroyed():
    ledger = Ledger()
    row = ledger.creating("job-1", 1, "launch:job-1:a1:x", {"id": 7, "gpu_name": "RTX 4090"}, 0.3, 0.3)
    e = ledger.entry(row)
    assert (e.state, e.instance_id, e.offer["id"], e.bid, e.open) == (CREATING, None, 7, 0.3, True)
    ledger.created(row, 9001)
    assert (ledger.entry(row).state, ledger.entry(row).instance_id) == (CREATED, 9001)
    assert [x.id for x in ledger.leaked("job-1")] == [row]
    ledger.close(row, "terminated")
    e = ledger.entry(row)
    assert (e.state, e.reason, e.open) == (DESTROYED, "terminated", False)
    assert ledger.leaked() == []


def test_close_twice_is_quiet_and_keeps_the_first_reason():
    ledger = Ledger()
    row = ledger.creating("job-1", 1, "l", {}, 0.3, None)
    ledger.created(row, 1)
    ledger.note(row, OUTBID)
    ledger.close(row, "terminated")
    first = ledger.entry(row).destroyed
    ledger.close(row, "swept")
    assert (ledger.entry(row).reason, ledger.entry(row).destroyed) == (OUTBID, first)


def test_outbids_are_counted_per_job():
    ledger = Ledger()
    for job, reason in [("a", OUTBID), ("a", OUTBID), ("a", "instance stopped"), ("b", OUTBID)]:
        ledger.note(ledger.creating(job, 1, "l", {}, 0.1, 0.1), reason)
    assert (ledger.outbids("a"), ledger.outbids("b"), ledger.outbids("c")) == (2, 1, 0)


def test_a_create_that_made_nothing_is_closed_as_not_created():
    ledger = Ledger()
    row = ledger.creating("job-1", 1, "l", {}, 0.3, None)
    ledger.close(row, "create refused", made=False)
    assert ledger.entry(row).state == NOT_CREATED and ledger.leaked() == []


def test_ledger_lives_in_the_state_database(launch_home):
    Ledger().creating("job-1", 1, "l", {}, 0.3, None)
    assert (launch_home / "state.db").exists()
    assert len(Ledger(launch_home / "state.db").entries("job-1")) == 1
