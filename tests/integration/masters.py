"""Masters of one cluster on PostgreSQL for the tests (tests/integration/test_ha.py, test_attack_ha.py): each with
its own ports and state directory; the ``cluster`` fixture (conftest.py) starts two and a web tier."""
from __future__ import annotations

import shutil

from tests.integration.harness import AGENT_INTERVAL, AGENT_TIMEOUT, Stack, _port_open, free_port, scaled, wait_until

LEASE = 3.0


class Masters:
    """Masters of one cluster, each with its own ports and state directory (holding a copy of the cluster's keys,
    as an operator copies them: docs/ha.md); ``extra``: more flags for each; ``auto_accept`` False leaves every
    new agent key pending."""

    def __init__(self, stack: Stack, db: str, names=("master1", "master2"), extra: tuple[str, ...] = (),
                 auto_accept: bool = True) -> None:
        self.stack, self.db = stack, db
        self.ports = {name: (free_port(), free_port()) for name in names}
        self.procs = {}
        self.extra = (*extra, *(["--auto-accept"] if auto_accept else []))

    def start(self, name: str):
        bind, admin = self.ports[name]
        state = self.stack.tmp / f"{name}-state"
        if not state.exists():
            shutil.copytree(self.stack.state / "keys", state / "keys")
        self.procs[name] = self.stack._start(name, [
            "appserver.py", "--bind", f"tcp://127.0.0.1:{bind}", "--admin-bind", f"tcp://127.0.0.1:{admin}",
            "--state-dir", str(state), "--db", self.db, "--leader-lease", str(LEASE),
            "--agent-timeout", str(scaled(AGENT_TIMEOUT)), "--heartbeat-interval", str(scaled(AGENT_INTERVAL)),
            *self.extra])
        return self.procs[name]

    def lead(self, name: str = "master1"):
        """Start ``name`` and wait until it leads (listens)."""
        proc = self.start(name)
        wait_until(lambda: self.leads(name) or not proc.alive(), 20, what=f"{name} leading")
        assert proc.alive(), proc.log()
        return proc

    def stand_by(self, name: str = "master2"):
        """Start ``name`` and wait until it says it stands by."""
        proc = self.start(name)
        wait_until(lambda: "standing by" in proc.log() or not proc.alive(), 20, what=f"{name} standing by")
        assert proc.alive() and not self.leads(name), proc.log()
        return proc

    def up(self):
        """The first master leading, the second standing by, a web tier knowing both: (leader, standby)."""
        leader, standby = self.lead("master1"), self.stand_by("master2")
        self.stack.web(master=self.admin_endpoints())
        return leader, standby

    def leads(self, name: str) -> bool:
        """It listens: only the leader does."""
        return _port_open(self.ports[name][0])

    def agents_endpoints(self) -> str:
        return ",".join(f"tcp://127.0.0.1:{bind}" for bind, _ in self.ports.values())

    def admin_endpoints(self) -> str:
        return ",".join(f"tcp://127.0.0.1:{admin}" for _, admin in self.ports.values())
