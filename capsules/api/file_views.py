"""File endpoints of a capsule: list, mkdir, remove, and reads and uploads streamed both ways.

Thin views over capsules/files.py, scoped to the caller's team like every capsule endpoint
(another team's capsule is 404). A read opens its gRPC stream on daphne's event loop
(`async_to_sync` from the view's thread, until the file's entry is in) and hands the rest to
Django as an async iterator paced by `wrenn.window`; an upload is served by an async view that
reads `wrenn.body` a chunk at a time (wrenn/transfers.py). No hop holds more than a few chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from capsules import files
from capsules.actions import ActionError
from capsules.api.errors import ACTION_STATUS, error_body
from capsules.api.schema import error_responses
from capsules.api.views import CapsuleAPIView
from capsules.models import Sandbox
from capsules.multipart import MultipartError, MultipartReader, boundary_of
from wrenn.transfers import Body, ResponseWindow, body_of, window_of

TAGS = ["files"]
FILE_ERRORS = error_responses(400, 401, 403, 404, 409, 500, 502, 503)
MAX_PATH_FIELD = 8 * 1024
# Room for the multipart envelope (boundaries, headers, the path) beyond the file's own bytes.
ENVELOPE = 64 * 1024


class PathSerializer(serializers.Serializer[Any]):
    path = serializers.CharField(trim_whitespace=False, help_text="Absolute, or relative to /root")


class ListSerializer(PathSerializer):
    depth = serializers.IntegerField(
        required=False, default=1, min_value=0, max_value=32, help_text="0 and 1: children only"
    )


class EntrySerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    path = serializers.CharField()
    type = serializers.ChoiceField(choices=["file", "directory", "symlink"])
    size = serializers.IntegerField()
    mode = serializers.IntegerField()
    permissions = serializers.CharField()
    owner = serializers.CharField()
    group = serializers.CharField()
    modified_at = serializers.IntegerField()
    symlink_target = serializers.CharField(allow_null=True)


class EntriesSerializer(serializers.Serializer[Any]):
    entries = EntrySerializer(many=True)


class EntryResponseSerializer(serializers.Serializer[Any]):
    entry = EntrySerializer()


class UploadSerializer(serializers.Serializer[Any]):
    path = serializers.CharField()
    file = serializers.FileField()


class MultipartStream(BaseParser):
    """Declares multipart bodies acceptable; never parses them (the view streams the body)."""

    media_type = "multipart/form-data"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return {}


class FileAPIView(CapsuleAPIView):
    def path_of(self, request: Request, serializer_class: type[PathSerializer] = PathSerializer) -> Any:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class FilesListView(FileAPIView):
    @extend_schema(
        tags=TAGS,
        summary="List a directory's entries, `depth` levels down",
        request=ListSerializer,
        responses={200: EntriesSerializer, **FILE_ERRORS},
    )
    def post(self, request: Request, capsule_id: str) -> Response:
        data = self.path_of(request, ListSerializer)
        return Response({"entries": files.list_dir(self.get_object(), data["path"], data["depth"])})


class FilesMakeDirView(FileAPIView):
    @extend_schema(
        tags=TAGS,
        summary="Create a directory and its parents; 409 `conflict` if the path exists",
        request=PathSerializer,
        responses={201: EntryResponseSerializer, **FILE_ERRORS},
    )
    def post(self, request: Request, capsule_id: str) -> Response:
        path = self.path_of(request)["path"]
        return Response({"entry": files.make_dir(self.get_object(), path)}, status=status.HTTP_201_CREATED)


class FilesRemoveView(FileAPIView):
    @extend_schema(
        tags=TAGS,
        summary="Remove a file, a symlink or a whole directory",
        request=PathSerializer,
        responses={204: None, **FILE_ERRORS},
    )
    def post(self, request: Request, capsule_id: str) -> Response:
        files.remove(self.get_object(), self.path_of(request)["path"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class FilesReadView(FileAPIView):
    """`files/read` and `files/stream/read`: the same streamed body, whatever the file's size."""

    @extend_schema(
        tags=TAGS,
        summary="A file's bytes (application/octet-stream), streamed",
        request=PathSerializer,
        responses={(200, "application/octet-stream"): bytes, **FILE_ERRORS},
    )
    def post(self, request: Request, capsule_id: str) -> StreamingHttpResponse:
        path = self.path_of(request)["path"]
        capsule = files.file_capsule(self.get_object())
        download = async_to_sync(files.open_download)(capsule, path)
        body = _paced(download.chunks(), window_of(getattr(request, "scope", {})))
        response = StreamingHttpResponse(body, content_type="application/octet-stream")
        response["X-Wrenn-File-Size"] = str(download.entry.size)
        return response


@dataclass
class Prepared:
    capsule: Sandbox
    body: Body
    boundary: bytes
    limit: int


class FilesWriteView(FileAPIView):
    """`files/write`: multipart `path` then `file`, up to WRENN_FILES_WRITE_MAX_BYTES.

    Served by an async view (`as_view`): an upload lasts as long as the client sends, and a
    synchronous view would hold the one thread every synchronous view of this worker shares
    (Django runs them thread-sensitively), stalling the whole API, host heartbeats included.
    DRF still authenticates, checks the caller and answers refusals, in `prepare`.
    """

    parser_classes = [MultipartStream]
    limit_setting = "FILES_WRITE_MAX_BYTES"

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        drf_view = super().as_view(**initkwargs)

        async def view(request: HttpRequest, capsule_id: str) -> HttpResponse:
            return await cls().respond_async(request, capsule_id)

        # What Django and drf-spectacular read from a view function.
        view.cls = cls  # type: ignore[attr-defined]
        view.initkwargs = drf_view.initkwargs  # type: ignore[attr-defined]
        view.csrf_exempt = True  # type: ignore[attr-defined]
        return view

    async def respond_async(self, request: HttpRequest, capsule_id: str) -> HttpResponse:
        prepared = await sync_to_async(self.prepare)(request, capsule_id)
        if isinstance(prepared, HttpResponse):
            return prepared
        try:
            entry = await _upload(prepared, self.limit_setting)
        except ActionError as exc:
            return JsonResponse(error_body(exc.code, exc.message), status=ACTION_STATUS[exc.code])
        return JsonResponse({"entry": entry})

    def prepare(self, request: HttpRequest, capsule_id: str) -> Prepared | HttpResponse:
        """DRF's checks of the caller and the capsule, then the upload's own; or the refusal."""
        self.args, self.kwargs = (), {"capsule_id": capsule_id}
        drf_request = self.initialize_request(request, capsule_id=capsule_id)
        self.request = drf_request
        self.headers = self.default_response_headers
        try:
            self.initial(drf_request, capsule_id=capsule_id)
            limit = int(getattr(settings, self.limit_setting))
            try:
                boundary = boundary_of(request.META.get("CONTENT_TYPE", ""))
            except MultipartError as exc:
                raise ActionError("invalid_request", str(exc)) from None
            if int(request.META.get("CONTENT_LENGTH") or 0) > limit + ENVELOPE:
                raise _too_large(limit, self.limit_setting)
            capsule = files.file_capsule(self.get_object())
        except Exception as exc:
            response = self.finalize_response(drf_request, self.handle_exception(exc))
            response.render()
            return response
        body = body_of(getattr(request, "scope", {})) or _DjangoBody(request)
        return Prepared(capsule, body, boundary, limit)

    @extend_schema(
        tags=TAGS,
        summary="Write a file (multipart `path` then `file`); parents are created, a file replaced whole",
        request={"multipart/form-data": UploadSerializer},
        responses={200: EntryResponseSerializer, **FILE_ERRORS, **error_responses(413, 415, 507)},
    )
    def post(self, request: Request, capsule_id: str) -> HttpResponse:
        """What DRF would call: only where the view is used without `as_view` (it documents it)."""
        prepared = self.prepare(request._request, capsule_id)
        if isinstance(prepared, HttpResponse):
            return prepared
        return Response({"entry": async_to_sync(_upload)(prepared, self.limit_setting)})


class FilesStreamWriteView(FilesWriteView):
    """`files/stream/write`: the same, for large files, up to WRENN_FILES_STREAM_WRITE_MAX_BYTES."""

    limit_setting = "FILES_STREAM_WRITE_MAX_BYTES"


def _too_large(limit: int, setting: str) -> ActionError:
    return ActionError("too_large", f"the file is larger than the limit of {limit} bytes (WRENN_{setting})")


async def _upload(prepared: Prepared, setting: str) -> dict[str, Any]:
    reader = MultipartReader(prepared.body.read, prepared.boundary)
    try:
        part = await reader.next_part()
        if part is None or part.name != "path":
            raise MultipartError("the first multipart field must be `path`, then the `file` part")
        raw = await reader.read_all(MAX_PATH_FIELD)
        try:
            path = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError("the `path` field must be UTF-8") from None
        part = await reader.next_part()
        if part is None or part.name != "file":
            raise MultipartError("expected the `file` part after the `path` field")
        return await files.upload(prepared.capsule, path, reader.chunks(), prepared.limit)
    except MultipartError as exc:
        raise ActionError("invalid_request", str(exc)) from None
    except files.TooLarge:
        raise _too_large(prepared.limit, setting) from None
    except ConnectionError as exc:  # the client went away mid-upload (another ASGI server)
        raise ActionError("invalid_request", str(exc)) from None


async def _paced(chunks: AsyncIterator[bytes], window: ResponseWindow | None) -> AsyncIterator[bytes]:
    """The chunks, each once the client has taken the previous ones (under daphne)."""
    try:
        async for chunk in chunks:
            if window is not None:
                await window.wait()
            yield chunk
    finally:
        if window is not None:
            window.release()


class _DjangoBody(Body):
    """The body as Django spooled it: where the Transfers wrapper did not run (a test client)."""

    def __init__(self, request: HttpRequest) -> None:
        self._request = request

    async def read(self, size: int) -> bytes:
        return self._request.read(size)
