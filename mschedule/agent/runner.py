"""Build the agents of one process (``--instances N``) and run them until SIGINT/SIGTERM."""
from __future__ import annotations

import logging
import os
import signal

import gevent
import gevent.event

from mschedule.agent.executor import Executor
from mschedule.agent.identity import hostname as system_hostname
from mschedule.agent.identity import load_or_create_agent_id, local_ipv4_addresses
from mschedule.agent.spool import Spool
from mschedule.agent.worker import AgentWorker
from mschedule.transport import CurveClientKeys, MasterLink
from mschedule.utils.defaults import AGENT_RELINK_AFTER, CONNECT_JITTER
from mschedule.utils.keys import load_or_create_keypair
from mschedule.utils.statedir import StateDirError

log = logging.getLogger(__name__)


def instance_state_dir(state_dir: str, index: int, instances: int) -> str:
    """A single agent keeps its id in ``<state-dir>``; instance k of N > 1 in ``<state-dir>/<k>``."""
    return state_dir if instances == 1 else os.path.join(state_dir, str(index))


def instance_hostname(template: str | None, index: int) -> str:
    """``--hostname`` with ``{i}`` replaced by the instance number; the system hostname by default."""
    if not template:
        return system_hostname()
    return template.replace("{i}", str(index))


def build_workers(master: str, state_dir: str, instances: int, hostname_template: str | None,
                  labels: dict[str, str], interval: float, poll_wait: float, output_cap: int,
                  master_key: bytes | None, max_backoff: float,
                  connect_jitter: float = CONNECT_JITTER) -> list[AgentWorker]:
    """Create (or load) every instance's identity and key pair; each instance has its own link (its own
    key). ``master_key`` None means --insecure. Raises StateDirError when a file cannot be
    written."""
    ips = local_ipv4_addresses()
    workers = []
    for index in range(instances):
        own_dir = instance_state_dir(state_dir, index, instances)
        agent_id = load_or_create_agent_id(own_dir)
        curve = None
        if master_key is not None:
            try:
                public, secret = load_or_create_keypair(own_dir, "agent")
            except OSError as exc:
                raise StateDirError(f"cannot create the agent key in {own_dir}: {exc.strerror}") from None
            curve = CurveClientKeys(master_key, public, secret)
        link = MasterLink(master, curve=curve, relink_after=AGENT_RELINK_AFTER)
        try:
            spool = Spool(own_dir, agent_id)
            spool.recover_interrupted()
        except OSError as exc:
            raise StateDirError(f"cannot use the result spool in {own_dir}: {exc.strerror}") from None
        workers.append(AgentWorker(agent_id, instance_hostname(hostname_template, index), link, ips=ips,
                                   labels=labels, interval=interval, poll_wait=poll_wait,
                                   executor=Executor(output_cap=output_cap), spool=spool,
                                   max_backoff=max_backoff, connect_jitter=connect_jitter))
    return workers


def ignore_sighup() -> None:
    """SIGHUP's default is death, and systemd does not restart a process a SIGHUP ended; an agent reads nothing
    at run time that could change, so it says so. Installed first thing: making a thousand instances' keys and
    spools takes a while."""
    gevent.signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP: nothing to read again; restart the agent to "
                                                             "change its flags or config"))


def run_workers(workers: list[AgentWorker]) -> None:
    """Start every worker and block until SIGINT or SIGTERM, then stop them cleanly."""
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    for worker in workers:
        worker.start()
    log.info("%d agent(s) started: %s%s", len(workers), ", ".join(w.id for w in workers[:5]),
             " ..." if len(workers) > 5 else "")
    stop.wait()
    log.info("agent stopping")
    gevent.joinall([gevent.spawn(w.stop) for w in workers], timeout=10)
    for worker in workers:
        worker.link.close()
