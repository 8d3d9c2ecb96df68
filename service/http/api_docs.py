"""GET /docs: Swagger UI over /openapi.json, its files served from the swagger-ui-bundle-v2 package,
never from a CDN, so the docs work where the service has no way out to the internet."""

from __future__ import annotations

from pathlib import Path

from swagger_ui_bundle import swagger_ui_path

from service.http.front_page import DOCS, OPENAPI

# The only files of the package served, by the name under /docs/: the rest (source maps, ES
# modules, its Jinja template) is not needed by the page.
ASSETS: dict[str, tuple[Path, str]] = {
    name: (Path(swagger_ui_path) / name, content_type)
    for name, content_type in (
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("favicon-32x32.png", "image/png"),
    )
}
# The route's pattern: any other name under /docs/ is a 404 like any unknown path.
ASSET_PATTERN = "|".join(name.replace(".", r"\.") for name in ASSETS)

# validatorUrl null: Swagger UI would otherwise send the description to an online validator.
# tryItOutEnabled false: the reader chooses to send a request.
DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>predcache API</title>
<link rel="stylesheet" href="{DOCS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS}/favicon-32x32.png">
</head>
<body>
<p style="font-family:sans-serif;margin:1rem 2rem 0"><a href="/">&larr; predcache</a></p>
<div id="swagger-ui"></div>
<script src="{DOCS}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "{OPENAPI}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
}});
</script>
</body>
</html>
""".encode()
