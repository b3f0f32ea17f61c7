"""The agent: dials the master, registers, heartbeats, pulls tasks and runs them (#! interpreter, else /bin/sh)."""
from mschedule.agent.backoff import Backoff
from mschedule.agent.executor import ExecResult, Executor
from mschedule.agent.worker import AgentWorker
from mschedule.transport import MasterLink

__all__ = ["AgentWorker", "Executor", "ExecResult", "MasterLink", "Backoff"]
