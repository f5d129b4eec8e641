"""The CLI's HTTP client: commands that touch a running server go through its API."""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer
from rich.console import Console

DEFAULT_URL = "http://127.0.0.1:8080"


def api_client(
    *, url: str | None = None, api_key: str | None = None, timeout: float = 60.0
) -> httpx.Client:
    """Reads QM_URL and QM_API_KEY unless given; refuses to run without a key."""
    base = url or os.environ.get("QM_URL", DEFAULT_URL)
    key = api_key or os.environ.get("QM_API_KEY")
    if not key:
        raise typer.BadParameter("no API key: set QM_API_KEY or pass --api-key")
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


def check(response: httpx.Response, *, console: Console | None = None) -> Any:
    """Return the JSON body of a 2xx; otherwise print the API's error message and exit 1."""
    if response.is_success:
        return response.json() if response.content else None
    try:
        error = response.json()["error"]
        message = error["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    (console or Console(stderr=True)).print(f"[red]error {response.status_code}:[/] {message}")
    raise typer.Exit(1)
