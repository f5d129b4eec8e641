"""The request-body limit of every route that does not read its body with a limit of its own
(ingestion does: `POST /v1/events`). Without it a JSON route read any body whole before it
checked anything, the caller's key included.

Every route, ingestion included, reads its body as sent: a compressed body
(`Content-Encoding: gzip`) is refused with 415 naming the encoding, where it had reached the
JSON parser as bytes and was answered "not valid JSON"."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quartermaster.api.errors import error_response
from quartermaster.errors import body_too_large


class BodyLimit:
    def __init__(self, app: ASGIApp, *, limit: int, own_limits: frozenset[str]) -> None:
        self.app = app
        self.limit = limit
        self.own_limits = own_limits  # paths whose route enforces the limit itself

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # Every Content-Encoding header and every coding in each: a second header or a list
        # (`gzip, identity`) is as compressed as one `gzip`.
        codings = [
            coding.strip().lower()
            for name, value in scope["headers"]
            if name == b"content-encoding"
            for coding in value.split(b",")
        ]
        if any(coding not in (b"", b"identity") for coding in codings):
            shown = ", ".join(c.decode("latin-1") for c in codings if c)
            response = error_response(
                415,
                "unsupported_media_type",
                f"Content-Encoding {shown!r} is not accepted: send the body uncompressed",
            )
            await response(scope, receive, send)
            return
        if scope["path"] in self.own_limits:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(int(declared), scope, receive, send)
            return
        if declared.isdigit():  # the server stops reading at the declared length
            await self.app(scope, receive, send)
            return
        # A chunked body: read up to the limit here, then hand it on as one message.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(None, scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, size: int | None, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "payload_too_large", body_too_large(size, self.limit))
        await response(scope, receive, send)
