"""mschedule: a remote job scheduler. One package, so that installing it puts no top-level ``agent``, ``master``,
``utils``... in site-packages: the web tier (mschedule.webserver), the master (mschedule.master), the agents
(mschedule.agent), the RPC layer (mschedule.transport) and shared code (mschedule.utils)."""

__version__ = "0.16.0"
