"""The session's autogroup nice (set for a whole session, inherited by its workers, applied by the API and the
trainer) and the trainer's CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from operators.scheduling import (
    SELF_AUTOGROUP,
    autogroup_nice,
    confine_to_cpus,
    one_box_trainer_cpus,
    set_autogroup_nice,
)
from tests.harness import make_settings, write_config

pytestmark = pytest.mark.skipif(not SELF_AUTOGROUP.exists(), reason="kernel without scheduling autogroups")
ROOT = Path(__file__).resolve().parents[2]


def _in_new_session(code: str, **env: str) -> str:
    """Run ``code`` in a child in its own session (its own autogroup: never this test process's)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, start_new_session=True, env={"PATH": "/usr/bin:/bin", **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_nice_holds_for_the_whole_session_and_its_workers() -> None:
    mine = autogroup_nice()  # None when this process is in the root autogroup (a CI runner's init session)
    got = _in_new_session("""
        import subprocess, sys
        from operators.scheduling import autogroup_nice, set_autogroup_nice
        before = autogroup_nice()
        assert set_autogroup_nice(3)
        worker = subprocess.run([sys.executable, "-c", "from operators.scheduling import autogroup_nice; print(autogroup_nice())"],
                                capture_output=True, text=True, check=True).stdout.strip()
        print(before, autogroup_nice(), worker)
    """)
    assert got == "0 3 3"
    assert autogroup_nice() == mine  # this process's own session is untouched


def test_bad_values_and_missing_autogroups(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="-20..19"):
        set_autogroup_nice(20)
    assert set_autogroup_nice(2, tmp_path / "no" / "autogroup") is False  # logged; runs on unchanged
    assert autogroup_nice(tmp_path / "no" / "autogroup") is None


def test_the_api_sets_its_sessions_nice_at_start(broker: str, tmp_path: Path) -> None:
    s = make_settings(broker, tmp_path)
    cfg = write_config(s.model_copy(update={"api": s.api.model_copy(update={"autogroup_nice": 2})}), tmp_path / "f.toml")
    got = _in_new_session("""
        import asyncio
        from api.app import create_app
        from operators.scheduling import autogroup_nice
        from operators.settings import Settings

        async def main():
            app = create_app(Settings())
            before = autogroup_nice()
            async with app.router.lifespan_context(app):
                print(before, autogroup_nice())
        asyncio.run(main())
    """, FUSIONREC_CONFIG=str(cfg))
    assert got.splitlines()[-1] == "0 2"


def test_an_api_inside_another_programs_session_leaves_it_alone() -> None:
    """Started from a shell (the shell leads the session), the nice would slow the shell and all it runs, and
    outlive the API: it is not applied (a fresh-user try found the shell at nice 7 after ``fusionrec serve``)."""
    code = ("from operators.scheduling import autogroup_nice, set_own_session_nice; "
            "print(set_own_session_nice(5), autogroup_nice())")
    out = subprocess.run(["bash", "-c", f'{sys.executable} -c "{code}"; true'], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, start_new_session=True, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "0"]
    assert "not applied" in out.stderr
    led = _in_new_session("""
        from operators.scheduling import autogroup_nice, set_own_session_nice
        print(set_own_session_nice(5), autogroup_nice())
    """)
    assert led.split() == ["True", "5"]


def test_the_trainer_sets_its_sessions_nice_at_start(tmp_path: Path) -> None:
    """``fusionrec run`` starts the gated trainer in its own session with ``trainer.autogroup_nice`` = 19: a
    challenger's fit takes only the CPU the flow and the API leave (a new user's trial, session 31, saw events take
    seconds to show while the fusion's trainer ran at the flow's weight)."""
    env = {"PATH": "/usr/bin:/bin", "FUSIONREC_TRAINER__AUTOGROUP_NICE": "19", "FUSIONREC_TRAINER__CPUS": "1",
           "FUSIONREC_LAKE__LAKE_DIR": str(tmp_path / "lake"), "FUSIONREC_STREAM__MODEL_DIR": str(tmp_path / "models")}
    trainer = subprocess.Popen([sys.executable, "-m", "flows.cli", "trainer", "--delay", "60s"], cwd=ROOT, env=env,
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        group = Path(f"/proc/{trainer.pid}/autogroup")
        deadline = time.monotonic() + 60
        while autogroup_nice(group) != 19 and trainer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the CLI imports, reads its settings, then sets the nice and waits out --delay
        assert trainer.poll() is None
        assert autogroup_nice(group) == 19
        assert os.sched_getaffinity(trainer.pid) == {max(os.sched_getaffinity(0))}  # trainer.cpus, set before the nice
    finally:
        trainer.terminate()
        out, _ = trainer.communicate(timeout=30)
    assert trainer.returncode == 0, out  # SIGTERM during --delay: a clean stop



def test_confine_to_cpus_keeps_the_highest_cpus_for_the_process_and_its_children() -> None:
    """``trainer.cpus``: the trainer and the processes its fits start run on the highest-numbered CPUs; under
    ``fusionrec run`` all but one, so one CPU stays free for the flow, the broker and the API."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        pytest.skip("needs 2 CPUs")
    got = _in_new_session("""
        import os, subprocess, sys
        from operators.scheduling import confine_to_cpus
        kept = confine_to_cpus(1)
        child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                               capture_output=True, text=True, check=True).stdout.strip()
        print(sorted(kept), sorted(os.sched_getaffinity(0)), child, sorted(confine_to_cpus(99)))
    """)
    top = str([mine[-1]])
    assert got.splitlines()[-1] == f"{top} {top} {top} {top}"  # a larger n than it has changes nothing
    with pytest.raises(ValueError, match=">= 1"):
        confine_to_cpus(0)
    assert [one_box_trainer_cpus(n) for n in (1, 2, 8)] == [None, 1, 7]
