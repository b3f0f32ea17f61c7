"""The master: stores agents and tasks, schedules targets, answers agents and the web tier."""
from mschedule.master.handler import AdminHandler, AgentHandler
from mschedule.master.scheduler import Scheduler
from mschedule.master.server import MasterKeys, MasterServer
from mschedule.master.storage import AgentRecord, Storage, TargetRecord, TaskRecord

__all__ = ["AgentHandler", "AdminHandler", "MasterKeys", "Scheduler", "MasterServer", "Storage", "AgentRecord",
           "TaskRecord", "TargetRecord"]
