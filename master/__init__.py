"""The master: stores agents and tasks, schedules targets, answers agents and the web tier."""
from master.handler import Handler
from master.scheduler import Scheduler
from master.server import MasterServer
from master.storage import AgentRecord, Storage, TargetRecord, TaskRecord

__all__ = ["Handler", "Scheduler", "MasterServer", "Storage", "AgentRecord", "TaskRecord", "TargetRecord"]
