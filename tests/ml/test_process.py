"""workers.ml.process.die_with_parent: a program started with it (nnU-Net's training interpreter) is killed
by the kernel when the process that started it dies, even after an exec."""

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import process_alive, wait_for


def test_an_exec_d_child_dies_with_the_process_that_started_it(tmp_path):
    out = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import subprocess, pathlib, time
        from workers.ml.process import die_with_parent
        child = subprocess.Popen(["sleep", "120"], preexec_fn=die_with_parent)
        pathlib.Path({str(out)!r}).write_text(str(child.pid))
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        assert wait_for(lambda: out.exists() and out.read_text().strip() != "")
        child = int(out.read_text())
        assert process_alive(child)
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not process_alive(child))  # sleep was exec'd: the request survived it
    finally:
        parent.kill()
