"""`vnnlab-train`'s code in a fresh interpreter, as a real process starts it: what a job imports,
and how (the slow tier: each test starts a Python that imports torch, Lightning and MLflow)."""

import pytest

from helpers import printed_by_a_fresh_python

pytestmark = pytest.mark.slow


def test_a_job_imports_its_code_once_without_collecting_and_freezes_it():
    """import_job_code imports torch, Lightning and MLflow with no garbage collection on the
    way, freezes the objects they made and leaves the collector on; a second call changes
    nothing."""
    code = (
        "import gc, sys; from vnnlab.commands import train; "
        "before = gc.get_stats()[2]['collections']; train.import_job_code(); "
        "frozen = gc.get_freeze_count(); train.import_job_code(); "
        "print(gc.get_stats()[2]['collections'] - before, frozen, gc.get_freeze_count() - frozen, "
        "gc.isenabled(), 'vnnlab.run.training' in sys.modules)"
    )
    full_collections, frozen, frozen_again, enabled, loaded = printed_by_a_fresh_python(code)
    assert full_collections == "0" and int(frozen) > 100_000 and frozen_again == "0"
    assert enabled == "True" and loaded == "True"
