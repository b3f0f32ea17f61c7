"""What two or more tiers share: states, messages, defaults, logging, RPC plumbing."""
from utils.exceptions import MessageError, MScheduleError, NotFound, ValidationError
from utils.states import FINISHED_STATES, State

__all__ = ["State", "FINISHED_STATES", "MScheduleError", "ValidationError", "NotFound", "MessageError"]
