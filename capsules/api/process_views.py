"""Exec and processes: thin views over capsules.processes, scoped to the caller's team.

`POST /v1/capsules/{id}/exec` runs a command and answers its output (200), or starts it in the
background (202); `GET …/processes` lists every process of the capsule; `DELETE
…/processes/{pid or tag}` signals one. Their sockets (`…/exec/stream`, `…/processes/{selector}/
stream`) are in pty/processes.py.
"""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from capsules import processes
from capsules.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
    StringMapField,
)
from capsules.api.schema import error_responses
from capsules.api.views import CapsuleAPIView
from capsules.processes import Command
from protos import rules

TAGS = ["processes"]
EXEC_ERRORS = error_responses(400, 401, 404, 409, 415, 500, 502, 503)
LIST_ERRORS = error_responses(401, 404, 409, 500, 502, 503)
SIGNAL_ERRORS = error_responses(400, 401, 404, 409, 500, 502, 503)


class ExecRequestSerializer(StrictSerializer):
    cmd = StrictCharField(help_text="The program: a path, or a name looked up in PATH.")
    args = serializers.ListField(
        child=StrictCharField(allow_blank=True), required=False, default=list, help_text="Its arguments."
    )
    timeout_sec = StrictIntegerField(
        required=False,
        default=30,
        min_value=1,
        help_text="Foreground only: seconds before the process group is killed (default 30).",
    )
    background = StrictBooleanField(
        required=False, default=False, help_text="Start it and answer 202 with its pid and tag at once."
    )
    tag = StrictCharField(
        required=False, help_text="The process's name for later calls (default proc- and 8 hex digits)."
    )
    envs = StringMapField(
        required=False, default=dict, help_text="Environment variables added to the default ones."
    )
    cwd = StrictCharField(
        required=False, allow_blank=True, help_text="Working directory (default the user's home)."
    )
    user = StrictCharField(required=False, help_text="`root` (the default) or `user`.")

    def validate_tag(self, value: str) -> str:
        if not rules.is_tag(value):
            raise serializers.ValidationError(rules.bad_tag(value))
        return value

    def validate_timeout_sec(self, value: int) -> int:
        most = int(settings.WRENN_EXEC_MAX_TIMEOUT_SECONDS)
        if value > most:
            raise serializers.ValidationError(f"must be at most {most}")
        return value

    def command(self) -> Command:
        data = self.validated_data
        return Command(
            cmd=data["cmd"],
            args=list(data["args"]),
            envs=dict(data["envs"]),
            cwd=data.get("cwd", ""),
            user=data.get("user", ""),
            tag=data.get("tag", ""),
            timeout_sec=0 if data["background"] else data["timeout_sec"],
        )


EXEC_RESPONSE = inline_serializer(
    "ExecResponse",
    {
        "sandbox_id": serializers.CharField(),
        "cmd": serializers.CharField(),
        "pid": serializers.IntegerField(),
        "stdout": serializers.CharField(),
        "stderr": serializers.CharField(),
        "exit_code": serializers.IntegerField(),
        "duration_ms": serializers.IntegerField(),
        "encoding": serializers.ChoiceField(choices=["utf-8", "base64"]),
        "timed_out": serializers.BooleanField(),
        "stdout_dropped_bytes": serializers.IntegerField(),
        "stderr_dropped_bytes": serializers.IntegerField(),
    },
)
BACKGROUND_RESPONSE = inline_serializer(
    "BackgroundExecResponse",
    {
        "sandbox_id": serializers.CharField(),
        "cmd": serializers.CharField(),
        "pid": serializers.IntegerField(),
        "tag": serializers.CharField(),
    },
)
PROCESS = inline_serializer(
    "ProcessEntry",
    {
        "pid": serializers.IntegerField(),
        "ppid": serializers.IntegerField(),
        "tag": serializers.CharField(allow_null=True),
        "cmd": serializers.CharField(),
        "args": serializers.ListField(child=serializers.CharField()),
        "state": serializers.CharField(),
        "owner": serializers.CharField(allow_null=True),
    },
)


def owner_of(view: CapsuleAPIView) -> str:
    """Who started a process, as the agent records it ("user:alice", "key:wrn_ab12cd34")."""
    caller = view.caller
    if caller.api_key is not None:
        return f"key:{caller.api_key.prefix}"
    return f"user:{view.request.user.get_username()}"


class ExecView(CapsuleAPIView):
    """Runs as the capsule's root in /root unless `user` or `cwd` say otherwise."""

    @extend_schema(
        tags=TAGS,
        summary="Run a command in a running capsule",
        request=ExecRequestSerializer,
        responses={200: EXEC_RESPONSE, 202: BACKGROUND_RESPONSE, **EXEC_ERRORS},
    )
    def post(self, request: Request, capsule_id: str) -> Response:
        sandbox = self.get_object()
        serializer = ExecRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        command = serializer.command()
        if serializer.validated_data["background"]:
            pid, tag = processes.start_background(sandbox, command, owner_of(self))
            body = {"sandbox_id": sandbox.pk, "cmd": command.cmd, "pid": pid, "tag": tag}
            return Response(body, status=status.HTTP_202_ACCEPTED)
        result = processes.run_command(sandbox, command, owner_of(self))
        return Response(result.body(sandbox.pk, command.cmd))


class ProcessListView(CapsuleAPIView):
    @extend_schema(
        tags=TAGS,
        summary="Every process in the capsule; `tag` is set for those exec started",
        responses={
            200: inline_serializer("ProcessList", {"processes": serializers.ListField(child=PROCESS)}),
            **LIST_ERRORS,
        },
    )
    def get(self, request: Request, capsule_id: str) -> Response:
        return Response({"processes": processes.list_processes(self.get_object())})


class ProcessDetailView(CapsuleAPIView):
    @extend_schema(
        tags=TAGS,
        summary="Signal a process (by pid or tag); a process exec started gets it with its whole group",
        parameters=[
            OpenApiParameter(
                "signal",
                str,
                description=f"One of {', '.join(processes.SIGNALS)} (default SIGKILL).",
            )
        ],
        responses={204: None, **SIGNAL_ERRORS},
    )
    def delete(self, request: Request, capsule_id: str, selector: str) -> Response:
        sandbox = self.get_object()
        signum = processes.parse_signal(request.query_params.get("signal"))
        processes.signal_process(sandbox, processes.parse_selector(selector), signum)
        return Response(status=status.HTTP_204_NO_CONTENT)
