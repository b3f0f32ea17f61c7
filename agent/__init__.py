"""The agent: dials the master, registers, heartbeats, pulls tasks and runs them with /bin/sh."""
from agent.backoff import Backoff
from agent.executor import ExecResult, Executor
from agent.worker import AgentWorker
from transport import MasterLink

__all__ = ["AgentWorker", "Executor", "ExecResult", "MasterLink", "Backoff"]
