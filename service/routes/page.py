"""The web page at /ui and Swagger UI at /docs, both from files the API serves itself (/static): no
CDN, so they work on a host with no internet.

The page is static HTML and JavaScript, served without auth: it holds no data of anyone's. Its script
asks for an API key once, keeps it in the browser's localStorage, and calls the JSON API with
`Authorization: Bearer`, never with the key in a URL. None of these routes is in the OpenAPI document.
"""

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from service.web import INDEX_HTML, STATIC_DIR

STATIC_URL = "/static"
SWAGGER_URL = f"{STATIC_URL}/vendor/swagger-ui"

# The page loads only from its own origin: a script or stylesheet from elsewhere is refused by the
# browser, so an offline host shows the same page. uPlot sizes its elements through inline styles.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The page's scripts and styles and the vendored libraries, mounted at STATIC_URL."""
    return StaticFiles(directory=STATIC_DIR)


@router.get("/")
def home(request: Request) -> RedirectResponse:
    """The root of the server opens the page."""
    return RedirectResponse(f"{_root(request)}/ui", status_code=307)


@router.get("/ui")
def page() -> FileResponse:
    """The web page: jobs, live loss curves, events, artifacts, and a form to start a job."""
    return FileResponse(
        INDEX_HTML,
        media_type="text/html",
        headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"},
    )


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, with its script and styles from this server."""
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} API",
        swagger_js_url=f"{root}{SWAGGER_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{SWAGGER_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{SWAGGER_URL}/favicon-32x32.png",
        # No validator badge: it would send the document to an outside service.
        swagger_ui_parameters={"validatorUrl": None},
    )


def _root(request: Request) -> str:
    """The path prefix a reverse proxy mounts the app under (`--root-path`), or ''."""
    return str(request.scope.get("root_path", "")).rstrip("/")
