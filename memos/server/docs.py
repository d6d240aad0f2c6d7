"""``/docs`` served offline (Swagger UI assets from the ``swagger-ui-bundle`` package) and the OpenAPI
document's security schemes (the API key as a bearer token or an ``X-API-Key`` header)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "SECURITY_SCHEMES", "install_docs"]

logger = logging.getLogger(__name__)

ASSETS_PATH = "/docs/assets"
"""Where the Swagger UI files are served (public, like /docs)."""

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerKey": {"type": "http", "scheme": "bearer", "bearerFormat": "mk_<key id>_<secret>",
                  "description": "An API key from `memos keys issue USER`, as 'Authorization: Bearer mk_...'."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "The same API key in an 'X-API-Key' header."},
}
_PUBLIC = {"/healthz"}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    schema["security"] = [{"bearerKey": []}, {"apiKeyHeader": []}]
    for path, operations in schema.get("paths", {}).items():
        if path in _PUBLIC:
            for operation in operations.values():
                operation["security"] = []
    app.openapi_schema = schema
    return schema


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` with bundled assets (no CDN) and declare the key schemes in ``/openapi.json``."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_path), name="swagger-ui-assets")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
