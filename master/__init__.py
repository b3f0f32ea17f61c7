"""The master: stores agents and tasks, schedules targets, answers agents and the web tier."""
from master.handler import AdminHandler, AgentHandler
from master.scheduler import Scheduler
from master.server import MasterKeys, MasterServer
from master.storage import AgentRecord, Storage, TargetRecord, TaskRecord

__all__ = ["AgentHandler", "AdminHandler", "MasterKeys", "Scheduler", "MasterServer", "Storage", "AgentRecord",
           "TaskRecord", "TargetRecord"]
