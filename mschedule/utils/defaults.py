"""Names and default values shared by the tiers."""
from __future__ import annotations

DEFAULT_MASTER = "tcp://127.0.0.1:9000"
"""Where agents and the web tier find the master."""

DEFAULT_BIND = "tcp://0.0.0.0:9000"
"""Where the master listens for agents."""

DEFAULT_ADMIN_BIND = "tcp://127.0.0.1:9001"
"""Where the master listens for the web tier and the ``keys`` command (admin calls)."""

DEFAULT_ADMIN = "tcp://127.0.0.1:9001"
"""Where the web tier finds the master's admin endpoint."""

DEFAULT_WEB_HOST = "127.0.0.1"
DEFAULT_WEB_PORT = 8080

DEFAULT_STATE_DIR = "/var/lib/mschedule"
"""Agent state directory; ``~/.mschedule`` is used when this one is not writable."""

FALLBACK_STATE_DIR = "~/.mschedule"

DEFAULT_HEARTBEAT_INTERVAL = 3.0
"""Seconds between two heartbeats of an agent."""

DEFAULT_AGENT_TIMEOUT = 10.0
"""Seconds without a heartbeat after which the master declares an agent offline, at the base heartbeat
interval; it stretches with the interval (mschedule/master/liveness.py)."""

DEFAULT_MAX_HEARTBEAT_RATE = 500.0
"""Heartbeats per second the whole fleet may send a master; above DEFAULT_HEARTBEAT_INTERVAL * this many
agents the interval stretches (mschedule/master/liveness.py)."""

DEFAULT_POLL_WAIT = 20.0
"""Seconds one long-poll ``get_task`` may wait on the master before answering None."""

MAX_POLL_WAIT = 60.0
"""The master never holds a ``get_task`` longer than this."""

MAX_RESULT_WAIT = 60.0
"""The master never holds a ``get_result(wait=...)`` longer than this."""

DEFAULT_TASK_LIST = 50
"""Task summaries ``GET /tasks`` answers when asked for no ``limit``."""

MAX_TASK_LIST = 1000
"""Largest ``limit`` of ``GET /tasks`` (a page; ``before`` gives the next one)."""

MAX_TIME = 10_000_000_000
"""Largest ``before`` of ``GET /tasks`` (a task's ``created``, Unix seconds): the year 2286."""

DEFAULT_OUTPUT_CAP = 1024 * 1024
"""Bytes of a script's output kept by the agent; the rest is dropped with a marker."""

DEFAULT_MAX_SCRIPT_BYTES = 1024 * 1024
"""Largest script (plain text, before base64) the web tier and the master accept."""

DEFAULT_MAX_RESULT_BYTES = 64 * 1024 * 1024
"""Most output bytes one task's answer carries; above it each output keeps only its tail (one target's
whole output is always available). The master is one process: building a gigabyte answer would stall it."""

DEFAULT_MAX_TARGETS = 10000
"""Most targets one task may have; also the largest ``parallel`` and ``fail_count`` (master ``--max-targets``)."""

MAX_TIMEOUT = 7 * 86400
"""Longest task ``timeout`` in seconds (a week); 0 means no timeout."""

MAX_FAIL_RATE = 100
"""``fail_rate`` is a percentage of the targets."""

DEFAULT_MAX_PENDING = 1000
"""Most agent keys waiting for an operator's decision; a new key beyond it is refused (any key may register,
so without a bound a flood of new keys would grow the master's state and the operators' list without end)."""

PENDING_FULL_LOG_EVERY = 10.0
"""Seconds between two log lines about new keys refused because too many are pending (with a count)."""

RPC_TIMEOUT = 5.0
"""Seconds a short zerorpc call waits for its reply."""

RPC_HEARTBEAT = 75
"""zerorpc channel heartbeat, seconds; must be the same on both ends of a link.

Longer than the longest long poll (MAX_POLL_WAIT, which a large fleet's agents are told to use), so idle
agents' polls carry no channel heartbeats (they were most of an idle
master's traffic). Liveness does not depend on it: agents heartbeat on their own, every call has a
timeout, and an agent whose heartbeat fails cuts its poll short.
"""

CONNECT_JITTER = 2.0
"""Most seconds an agent waits, at random, before its first register and before registering again after the
master restarted or stopped answering: a fleet that (re)starts at once spreads its registrations and CURVE
handshakes over this time instead of arriving in the same instant. Well under the agent timeout, which is
also the grace a restarted master gives."""

AGENT_RELINK_AFTER = 30.0
"""Seconds of failing calls after which an agent replaces its connection to the master. Before that it keeps
its socket (zmq reconnects by itself; every agent call is idempotent): a fresh socket per timeout is a fresh
CURVE handshake per timeout, and under load that feeds itself (a reconnect storm)."""

BACKOFF_BASE = 0.2
BACKOFF_CAP = 5.0
"""Reconnect backoff of the agent: exponential from BASE to CAP seconds, with jitter. The cap stays well
under the master's agent timeout, which is also the grace a restarted master gives its agents."""

TIMEOUT_EXIT_CODE = 124
"""Exit code reported for a script killed by its timeout (as GNU ``timeout`` does)."""

TOKEN_PREFIX = "ms_"
"""How every API token the master makes starts; the web tier asks the master only about tokens that do."""

MAX_AUDIT_TEXT = 256
"""Most characters of each text field of an audit record: the master refuses longer ones (mschedule/master/audit.py),
the web tier cuts what it records to fit (mschedule/webserver/access.py)."""

DEFAULT_LEASE = 10.0
"""Seconds a master on PostgreSQL may go without a round trip to its database before it stops serving (and
PostgreSQL ends its silent session, releasing the leader lock to a standby: mschedule/master/leadership.py)."""
