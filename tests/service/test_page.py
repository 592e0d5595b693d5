"""The web page at /ui and Swagger UI at /docs load nothing from outside the server, and everything
they reference answers; the vendored libraries are the published ones, and the installed package
carries them. (tests/browser/test_page.py renders the page in Chromium against a running server.)"""

import hashlib
import json
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

from fastapi.testclient import TestClient

from service.web import INDEX_HTML, STATIC_DIR, WEB_DIR

ROOT = Path(__file__).resolve().parents[2]

# sha256 of the files as they are in the npm packages (see service/web/static/vendor/README.md).
VENDORED = {
    "uplot/uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uplot/uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "uplot/LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
    "swagger-ui/swagger-ui-bundle.js": "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    "swagger-ui/swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
    "swagger-ui/favicon-32x32.png": "3ed612f41e050ca5e7000cad6f1cbe7e7da39f65fca99c02e99e6591056e5837",
    "swagger-ui/LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
}


class References(HTMLParser):
    """Every src and href of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("src", "href") and value]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.found


def assert_all_local(client: TestClient, html: str) -> list[str]:
    """No reference leaves the server (no scheme, no host); each file referenced answers 200."""
    found = references(html)
    outside = [url for url in found if re.match(r"^([a-z][a-z0-9+.-]*:|//)", url) and url != "data:,"]
    assert outside == [], outside
    assert not re.search(r"https?://", html), "the HTML names an outside address"
    files = [url for url in found if url.startswith("/static/")]
    for url in files:
        assert client.get(url).status_code == 200, url
    return files


def test_the_page_is_served_without_a_key_and_references_only_this_server(client: TestClient) -> None:
    response = client.get("/ui")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    files = assert_all_local(client, response.text)
    assert "/static/vendor/uplot/uPlot.iife.min.js" in files
    assert "/static/page.js" in files


def test_the_root_opens_the_page(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/ui"


def test_every_module_the_page_imports_is_served(client: TestClient) -> None:
    for script in sorted(STATIC_DIR.glob("*.js")):
        response = client.get(f"/static/{script.name}")
        assert response.status_code == 200
        # Module scripts run only with a JavaScript media type.
        assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
        for imported in re.findall(r'from "\./([\w.-]+)"', script.read_text()):
            assert (STATIC_DIR / imported).is_file(), f"{script.name} imports {imported}"


def test_docs_load_swagger_from_this_server(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    files = assert_all_local(client, response.text)
    assert set(files) >= {
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui/swagger-ui.css",
    }
    assert "url: '/openapi.json'" in response.text
    assert '"validatorUrl": null' in response.text
    assert client.get("/openapi.json").status_code == 200


def test_redoc_is_gone_rather_than_blank(client: TestClient) -> None:
    # FastAPI's /redoc loads its script from a CDN; no route is better than a blank page.
    assert client.get("/redoc").status_code == 404


def test_static_files_stay_inside_their_folder(client: TestClient) -> None:
    for path in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/..%2f..%2fapp.py"):
        assert client.get(path).status_code == 404, path
    assert client.get("/static/nothing-here.js").status_code == 404


def test_the_page_routes_are_not_in_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/ui", "/docs"} & set(paths)


def test_vendored_files_are_the_published_ones() -> None:
    for name, digest in VENDORED.items():
        content = (STATIC_DIR / "vendor" / name).read_bytes()
        assert hashlib.sha256(content).hexdigest() == digest, name
    notes = (STATIC_DIR / "vendor" / "README.md").read_text()
    assert "uPlot 1.6.32" in notes and "swagger-ui-dist 5.35.0" in notes


def test_the_form_starts_from_the_example_lora_spec() -> None:
    example = json.loads((ROOT / "examples" / "jobs" / "lora.json").read_text())
    assert json.loads((STATIC_DIR / "default-spec.json").read_text()) == example


def test_the_form_lists_each_methods_auto_rate_from_the_catalogue() -> None:
    """Under the spec, the page names the rate learning_rate "auto" picks for each method, as
    GET /v1/methods lists it (`auto_learning_rate`)."""
    page = (STATIC_DIR / "page.js").read_text()
    assert 'api("/v1/methods")' in page and "item.auto_learning_rate" in page
    assert 'id="auto-rates"' in INDEX_HTML.read_text()


def test_the_package_data_covers_every_file_of_the_page() -> None:
    """What `pip install .` (not editable) ships: every file under service/web is matched."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["service.web"]
    shipped = {path for pattern in patterns for path in WEB_DIR.glob(pattern) if path.is_file()}
    needed = {
        path
        for path in WEB_DIR.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert needed - shipped == set()
    assert INDEX_HTML in shipped
