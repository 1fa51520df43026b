"""Run the API under uvicorn; :func:`app_from_env` is the factory each worker process calls.

With one worker the CLI passes the app object itself; with several, uvicorn starts worker
processes that each build their own app from the environment (``OMNIOFFER_*``), so the CLI
exports its flags there first (:func:`export_settings`).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from omnioffer.settings import Settings
from serving.app import create_app


def app_from_env() -> FastAPI:
    """Build the app from ``OMNIOFFER_*`` environment variables (a uvicorn factory)."""
    return create_app(Settings())


def export_settings(settings: Settings) -> None:
    """Put every explicitly set field into the environment, for worker processes."""
    for name in settings.model_fields_set:
        value: Any = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        os.environ[f"OMNIOFFER_{name.upper()}"] = str(value)
