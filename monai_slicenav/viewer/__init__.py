"""Navigate a volume in the browser with a trained stage-2 model: the true slice beside the one it imagines
(``slicenav navigate``)."""

from .server import MAX_REQUEST_BYTES, NavigatorServer, make_server
from .session import COMMANDS, MOVES, NavigationSession, open_session

__all__ = [
    "MAX_REQUEST_BYTES",
    "NavigatorServer",
    "make_server",
    "COMMANDS",
    "MOVES",
    "NavigationSession",
    "open_session",
]
