"""funtask-trio: turn any async function into an HTTP-callable task, on Trio.

Speaks the funtask v1 wire protocol (the Go library's), with progress,
cancellation, callbacks that never lose a result, and a live dashboard.
"""

from ._callbacks import verify_callback as verify_callback
from ._exceptions import ClientError as ClientError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import FuntaskError as FuntaskError
from ._exceptions import ParamError as ParamError
from ._exceptions import TaskError as TaskError
from ._params import ParamReader as ParamReader
from ._params import Params as Params
from ._result import Result as Result
from ._result import fail as fail
from ._result import fail_from_error as fail_from_error
from ._result import ok as ok
from ._run import Run as Run
from ._server import Server as Server

__version__ = "0.1.0"

__all__ = [
    "ClientError",
    "ConfigError",
    "FuntaskError",
    "ParamError",
    "ParamReader",
    "Params",
    "Result",
    "Run",
    "Server",
    "TaskError",
    "fail",
    "fail_from_error",
    "ok",
    "verify_callback",
]
