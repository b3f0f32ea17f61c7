"""The web tier: an aiohttp HTTP API in front of the master."""
from mschedule.webserver.routes import build_app
from mschedule.webserver.rpc_bridge import MasterBridge

__all__ = ["build_app", "MasterBridge"]
