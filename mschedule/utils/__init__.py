"""What two or more tiers share: states, messages, defaults, logging, RPC plumbing."""
from mschedule.utils.exceptions import MessageError, MScheduleError, NotFound, ValidationError
from mschedule.utils.states import FINISHED_STATES, State

__all__ = ["State", "FINISHED_STATES", "MScheduleError", "ValidationError", "NotFound", "MessageError"]
