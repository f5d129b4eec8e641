"""Redaction of secret values from text streams (pure).

A `Redactor` is fed chunks and returns text that is safe to emit. It holds back at most
`longest secret - 1` characters at the end of each chunk, because those could be the start of
a secret that the next chunk completes; `flush()` releases the rest at the end of the stream.
So a secret split across any chunk boundaries is still replaced, and output is identical to
redacting the whole text at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

REPLACEMENT = "[REDACTED]"
# Values shorter than this are not redacted: replacing every "1" or "ok" in a log would make
# it unreadable while protecting nothing (such a value is not a secret worth the name).
MIN_REDACTED_LENGTH = 4


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    unique = sorted({v for v in values if len(v) >= MIN_REDACTED_LENGTH}, key=len, reverse=True)
    if not unique:
        return None
    # Longest first, so a secret that contains another is replaced whole.
    return re.compile("|".join(re.escape(v) for v in unique))


def redact(text: str, values: Iterable[str], replacement: str = REPLACEMENT) -> str:
    pattern = _pattern(values)
    return text if pattern is None else pattern.sub(replacement, text)


class Redactor:
    def __init__(self, values: Iterable[str], replacement: str = REPLACEMENT) -> None:
        self._values: set[str] = set()
        self._replacement = replacement
        self._pending = ""
        self._pattern: re.Pattern[str] | None = None
        self._longest = 0
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Start redacting more values (e.g. a credential leased mid-stream)."""
        self._values.update(v for v in values if len(v) >= MIN_REDACTED_LENGTH)
        self._pattern = _pattern(self._values)
        self._longest = max((len(v) for v in self._values), default=0)

    @property
    def secret_count(self) -> int:
        return len(self._values)

    def feed(self, chunk: str) -> str:
        if self._pattern is None:
            return chunk
        buffer = self._pending + chunk
        # A match could still be growing only if it starts within the last (longest - 1)
        # characters; everything before that is final.
        safe_end = len(buffer) - (self._longest - 1)
        out: list[str] = []
        position = 0
        for match in self._pattern.finditer(buffer):
            if match.start() >= safe_end:
                break
            out.append(buffer[position : match.start()])
            out.append(self._replacement)
            position = match.end()
        emit_to = max(position, safe_end)
        out.append(buffer[position:emit_to])
        self._pending = buffer[emit_to:]
        return "".join(out)

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        if self._pattern is None:
            return rest
        return self._pattern.sub(self._replacement, rest)

    def stream(self, chunks: Iterable[str]) -> Iterator[str]:
        for chunk in chunks:
            out = self.feed(chunk)
            if out:
                yield out
        tail = self.flush()
        if tail:
            yield tail
