"""The host agent: runs capsules' PTY sessions on one machine and serves them over gRPC.

Start it with ``python -m hostagent``. It never imports Django, nor the standard-library
``pty`` module (the name belongs to this repository's Django app).
"""

import os

# The agent forks PTY children from a process running grpc's threads. With grpc's fork support
# on, its at-fork handlers restart grpc threads in the child, which then abort when the child
# closes their descriptors before exec. The child execs at once and never touches grpc, so turn
# the handlers off; this must happen before grpc is first imported.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

# Reported in heartbeats to the control plane.
__version__ = "0.1.0"
