"""``--version`` on each entry point: names the tier and mschedule's version, and exits 0 before anything starts
(no state dir, no keys, no master needed), so an operator or a package's smoke test can ask what is installed."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import mschedule

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_version_is_a_plain_string_the_build_can_read():
    with open(os.path.join(ROOT, "mschedule", "__init__.py")) as f:
        literal = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M)
    assert literal and literal.group(1) == mschedule.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", mschedule.__version__)


@pytest.mark.parametrize(("entry", "name"), [(["appserver.py"], "mschedule-master"),
                                              (["appwebserver.py"], "mschedule-web"),
                                              (["app.py"], "mschedule-agent"),
                                              (["-m", "mschedule.cli"], "mschedule")])
def test_entry_point_prints_its_version(entry, name):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSCHEDULE_")}
    proc = subprocess.run([sys.executable, *entry, "--version"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{name} {mschedule.__version__}\n", "")
