"""The web page's files: `index.html` (served at /ui) and `static/` (served at /static), with the
charting library and Swagger UI vendored under `static/vendor/` so nothing is fetched from a CDN.

No Python lives here beyond the paths; service/routes/page.py serves the files.
"""

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
INDEX_HTML = WEB_DIR / "index.html"
STATIC_DIR = WEB_DIR / "static"
