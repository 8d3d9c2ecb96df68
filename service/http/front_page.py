"""GET /: what this service is (the model, its version) and its endpoints with links, as HTML for a
browser and JSON for everything else; built once from the OpenAPI description, so it cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from service.models.upstream import UpstreamModel

DOCS = "/docs"
OPENAPI = "/openapi.json"
_METHODS = ("get", "post", "put", "patch", "delete")

# The pages for people, which the OpenAPI description leaves out as it leaves out itself.
_OWN_ENDPOINTS = (
    ("GET", DOCS, "Interactive API documentation: try every endpoint from the browser"),
    ("GET", OPENAPI, "The OpenAPI 3.1 description of this API"),
)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.35rem .6rem;"
    "border-bottom:1px solid #ddd;vertical-align:top}code{font-size:.95em}"
)


@dataclass(frozen=True, slots=True)
class FrontPage:
    """The two encodings of the front page, served as they are."""

    html: bytes
    json: bytes


def build_front_page(spec: bytes, *, model: object, version: str) -> FrontPage:
    """The front page for the encoded OpenAPI description `spec` of a service running `model`."""
    paths: dict[str, dict[str, Any]] = orjson.loads(spec)["paths"]
    endpoints = [
        {"method": method, "path": path, "summary": summary, "href": _href(method, path)}
        for method, path, summary in (
            *_OWN_ENDPOINTS,
            *(
                (method.upper(), path, operation.get("summary", ""))
                for path, operations in paths.items()
                for method, operation in operations.items()
                if method in _METHODS
            ),
        )
    ]
    name = model_name(model)
    payload = {
        "service": "predcache",
        "model": {"name": name, "version": version},
        "docs": DOCS,
        "openapi": OPENAPI,
        "endpoints": endpoints,
    }
    return FrontPage(html=_html(name, version, endpoints).encode(), json=orjson.dumps(payload))


def model_name(model: object) -> str:
    """A plug-in by its class, `module:Class`; an upstream by its URL's scheme, host, port and path
    only (a password, or an API key in its query, is for the upstream, not for every visitor)."""
    if not isinstance(model, UpstreamModel):
        return f"{type(model).__module__}:{type(model).__qualname__}"
    parts = urlsplit(model.url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def prefers_html(accept: str | None) -> bool:
    """Whether an Accept header ranks text/html above application/json. Browsers do; curl (`*/*`),
    API clients and a missing header do not, and get JSON like every other answer of the API."""
    return _quality_of("text/html", accept) > _quality_of("application/json", accept)


def _quality_of(media_type: str, accept: str | None) -> float:
    """The q an Accept header gives `media_type`: that of the most specific range matching it
    (RFC 9110, 12.5.1), 0 when none does."""
    best_q, best_rank = 0.0, -1
    for media_range in (accept or "*/*").split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        rank = _rank(kind.lower(), media_type)
        if rank > best_rank:
            best_q, best_rank = _q(params), rank
    return best_q


def _rank(media_range: str, media_type: str) -> int:
    """2 for the exact type, 1 for `type/*`, 0 for `*/*`, -1 when the range does not match."""
    if media_range == media_type:
        return 2
    if media_range == media_type.split("/")[0] + "/*":
        return 1
    return 0 if media_range == "*/*" else -1


def _q(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def _href(method: str, path: str) -> str | None:
    """Where a link to the endpoint goes: the endpoint itself for a GET needing nothing, else its
    operation in the interactive docs."""
    if method != "GET":
        return None
    if path == "/predict":
        return f"{DOCS}#/default/predictGet"
    return path


def _html(model: str, version: str, endpoints: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{escape(e['method'])}</td><td>{_path_cell(e['path'], e['href'])}</td>"
        f"<td>{escape(e['summary'])}</td></tr>"
        for e in endpoints
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>predcache: {escape(model)} {escape(version)}</title><style>{_STYLE}</style></head><body>"
        "<h1>predcache</h1>"
        f"<p>A prediction cache in front of the model <strong>{escape(model)}</strong>, "
        f"version <code>{escape(version)}</code>.</p>"
        f'<p><a href="{DOCS}">Try the API in your browser</a> · '
        f'<a href="{OPENAPI}">OpenAPI description</a></p>'
        "<h2>Endpoints</h2><table><thead><tr><th>Method</th><th>Path</th><th>What it does</th></tr>"
        f"</thead><tbody>{rows}</tbody></table></body></html>"
    )


def _path_cell(path: str, href: str | None) -> str:
    code = f"<code>{escape(path)}</code>"
    return code if href is None else f'<a href="{escape(href)}">{code}</a>'
