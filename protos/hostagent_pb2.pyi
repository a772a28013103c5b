from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sandbox(_message.Message):
    __slots__ = ("sandbox_id", "runtime", "pty_sessions", "state")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    PTY_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    runtime: str
    pty_sessions: int
    state: str
    def __init__(self, sandbox_id: _Optional[str] = ..., runtime: _Optional[str] = ..., pty_sessions: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "template", "vcpus", "memory_mb")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    template: str
    vcpus: int
    memory_mb: int
    def __init__(self, sandbox_id: _Optional[str] = ..., template: _Optional[str] = ..., vcpus: _Optional[int] = ..., memory_mb: _Optional[int] = ...) -> None: ...

class CreateSandboxResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class DestroySandboxRequest(_message.Message):
    __slots__ = ("sandbox_id",)
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    def __init__(self, sandbox_id: _Optional[str] = ...) -> None: ...

class DestroySandboxResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSandboxesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSandboxesResponse(_message.Message):
    __slots__ = ("sandboxes",)
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    sandboxes: _containers.RepeatedCompositeFieldContainer[Sandbox]
    def __init__(self, sandboxes: _Optional[_Iterable[_Union[Sandbox, _Mapping]]] = ...) -> None: ...

class PtyAttachRequest(_message.Message):
    __slots__ = ("sandbox_id", "tag", "cmd", "args", "cols", "rows", "envs", "cwd", "user", "owner", "resume", "from_offset", "replay")
    class EnvsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ENVS_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    FROM_OFFSET_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tag: str
    cmd: str
    args: _containers.RepeatedScalarFieldContainer[str]
    cols: int
    rows: int
    envs: _containers.ScalarMap[str, str]
    cwd: str
    user: str
    owner: str
    resume: bool
    from_offset: int
    replay: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., tag: _Optional[str] = ..., cmd: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., cols: _Optional[int] = ..., rows: _Optional[int] = ..., envs: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., user: _Optional[str] = ..., owner: _Optional[str] = ..., resume: _Optional[bool] = ..., from_offset: _Optional[int] = ..., replay: _Optional[bool] = ...) -> None: ...

class PtyStarted(_message.Message):
    __slots__ = ("tag", "pid")
    TAG_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    tag: str
    pid: int
    def __init__(self, tag: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class PtyOutput(_message.Message):
    __slots__ = ("data", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class PtyExited(_message.Message):
    __slots__ = ("exit_code",)
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    def __init__(self, exit_code: _Optional[int] = ...) -> None: ...

class PtyAttachResponse(_message.Message):
    __slots__ = ("started", "output", "exited", "missed")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    started: PtyStarted
    output: PtyOutput
    exited: PtyExited
    missed: PtyMissed
    def __init__(self, started: _Optional[_Union[PtyStarted, _Mapping]] = ..., output: _Optional[_Union[PtyOutput, _Mapping]] = ..., exited: _Optional[_Union[PtyExited, _Mapping]] = ..., missed: _Optional[_Union[PtyMissed, _Mapping]] = ...) -> None: ...

class PtyMissed(_message.Message):
    __slots__ = ("offset", "bytes")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    offset: int
    bytes: int
    def __init__(self, offset: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class PtyReadRequest(_message.Message):
    __slots__ = ("sandbox_id", "tag", "offset", "max_bytes", "neutralize_queries")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    NEUTRALIZE_QUERIES_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tag: str
    offset: int
    max_bytes: int
    neutralize_queries: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., tag: _Optional[str] = ..., offset: _Optional[int] = ..., max_bytes: _Optional[int] = ..., neutralize_queries: _Optional[bool] = ...) -> None: ...

class PtyReadResponse(_message.Message):
    __slots__ = ("data", "offset", "end_offset", "exited", "exit_code")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    end_offset: int
    exited: bool
    exit_code: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., exited: _Optional[bool] = ..., exit_code: _Optional[int] = ...) -> None: ...

class PtySendInputRequest(_message.Message):
    __slots__ = ("sandbox_id", "tag", "data")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tag: str
    data: bytes
    def __init__(self, sandbox_id: _Optional[str] = ..., tag: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class PtySendInputResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PtyResizeRequest(_message.Message):
    __slots__ = ("sandbox_id", "tag", "cols", "rows")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tag: str
    cols: int
    rows: int
    def __init__(self, sandbox_id: _Optional[str] = ..., tag: _Optional[str] = ..., cols: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class PtyResizeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PtyKillRequest(_message.Message):
    __slots__ = ("sandbox_id", "tag")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tag: str
    def __init__(self, sandbox_id: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class PtyKillResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PtyInputRequest(_message.Message):
    __slots__ = ("sandbox_id", "tag", "data", "resize", "kill")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tag: str
    data: bytes
    resize: PtySize
    kill: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., tag: _Optional[str] = ..., data: _Optional[bytes] = ..., resize: _Optional[_Union[PtySize, _Mapping]] = ..., kill: _Optional[bool] = ...) -> None: ...

class PtySize(_message.Message):
    __slots__ = ("cols", "rows")
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    cols: int
    rows: int
    def __init__(self, cols: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class PtyInputAck(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PauseSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id",)
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    def __init__(self, sandbox_id: _Optional[str] = ...) -> None: ...

class PauseSandboxResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class ResumeSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id",)
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    def __init__(self, sandbox_id: _Optional[str] = ...) -> None: ...

class ResumeSandboxResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class ListPtySessionsRequest(_message.Message):
    __slots__ = ("sandbox_id",)
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    def __init__(self, sandbox_id: _Optional[str] = ...) -> None: ...

class PtySessionInfo(_message.Message):
    __slots__ = ("sandbox_id", "tag", "pid", "cmd", "args", "owner", "streams", "bytes_in", "bytes_out", "exited", "exit_code", "started_at_ms")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tag: str
    pid: int
    cmd: str
    args: _containers.RepeatedScalarFieldContainer[str]
    owner: str
    streams: int
    bytes_in: int
    bytes_out: int
    exited: bool
    exit_code: int
    started_at_ms: int
    def __init__(self, sandbox_id: _Optional[str] = ..., tag: _Optional[str] = ..., pid: _Optional[int] = ..., cmd: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., owner: _Optional[str] = ..., streams: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., exited: _Optional[bool] = ..., exit_code: _Optional[int] = ..., started_at_ms: _Optional[int] = ...) -> None: ...

class ListPtySessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[PtySessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[PtySessionInfo, _Mapping]]] = ...) -> None: ...
