"""What `demo up` tells the operator to run afterwards (no lab: the text only)."""

from __future__ import annotations


def test_the_teardown_hint_names_the_make_target_and_the_kvmnet_command() -> None:
    # `demo up` is started both ways (make demo, kvmnet demo up): either way down works.
    from kvmnet_lab import demo

    assert "make demo-down" in demo.TEARDOWN_HINT
    assert "kvmnet demo down" in demo.TEARDOWN_HINT
