"""The operator application's static files: local only (no CDN), consistent, and the vendored versions locked.

* Every ``<script>``, ``<link>`` and ``<img>`` of the served page, every ES module import and every CSS
  ``url()`` points at a file that exists under ``lcms_service/static`` and that the service serves;
  nothing in the application's own files names another host.
* The vendored libraries are the versions (and npm integrity hashes) of ``frontend/package-lock.json``,
  as ``VENDOR.md`` records them; with ``frontend/node_modules`` installed they are byte-identical to it.
* The page's base URL follows the app's mount point; static paths cannot leave the folder; the page is
  sent with a Content-Security-Policy that allows only the service's own origin.
* The ids the modules look up exist in the page, and every form control has a label.
"""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lcms_service.routers import operator
from lcms_service.routers.operator import STATIC_DIR

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "frontend"
VENDOR = STATIC_DIR / "vendor"
OWN_FILES = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file() and VENDOR not in p.parents)
JS_FILES = sorted((STATIC_DIR / "js").glob("*.js"))
#: Vendored package -> (folder under vendor/, the files copied from the package, the file carrying the version).
VENDORED = {
    "maplibre-gl": ("maplibre-gl", {"dist/maplibre-gl.js", "dist/maplibre-gl.css", "LICENSE.txt", "package.json"}),
    "@maplibre/maplibre-gl-compare": (
        "maplibre-gl-compare",
        {"dist/maplibre-gl-compare.js", "dist/maplibre-gl-compare.css", "LICENCE", "package.json"},
    ),
}
#: Not URLs to fetch: XML namespaces.
NOT_FETCHED = ("http://www.w3.org/2000/svg",)


class _Page(HTMLParser):
    """The references (tag, attribute, value), ids, form controls and labels of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()
        self.controls: list[dict[str, str]] = []
        self.label_for: set[str] = set()
        self.open_labels = 0
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "base":
            self.base = a.get("href")
        for attr in ("src", "href"):
            if attr in a and tag in ("script", "link", "img", "iframe", "source", "audio", "video"):
                self.refs.append((tag, attr, a[attr]))
        if tag == "label":
            self.open_labels += 1
            if "for" in a:
                self.label_for.add(a["for"])
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append({**a, "_in_label": str(self.open_labels > 0)})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.open_labels -= 1


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(operator.router)
    return TestClient(app)


@pytest.fixture(scope="module")
def page(client: TestClient) -> _Page:
    response = client.get("/")
    assert response.status_code == 200
    parsed = _Page()
    parsed.feed(response.text)
    return parsed


def lock() -> dict[str, Any]:
    packages: dict[str, Any] = json.loads((FRONTEND / "package-lock.json").read_text())["packages"]
    return packages


def local_path(url: str, base: str = "/") -> Path:
    """The file under STATIC_DIR a page URL (relative to ``base``) names; fails for anything not local."""
    parts = urlsplit(url)
    assert not parts.scheme and not parts.netloc, f"{url!r} is not a local URL"
    path = urlsplit(urljoin(base, url)).path
    assert path.startswith("/static/"), f"{url!r} is outside /static/"
    return STATIC_DIR / path.removeprefix("/static/")


def test_the_page_loads_only_local_files(client: TestClient, page: _Page) -> None:
    assert page.base == "/"
    kinds = {(tag, attr) for tag, attr, _ in page.refs}
    assert ("script", "src") in kinds and ("link", "href") in kinds
    for tag, attr, url in page.refs:
        path = local_path(url)
        assert path.is_file(), f"<{tag} {attr}={url!r}>: {path} does not exist"
        response = client.get(f"/static/{path.relative_to(STATIC_DIR).as_posix()}")
        assert response.status_code == 200, url
        assert response.content == path.read_bytes()
        if path.suffix == ".js":  # module scripts need a JavaScript media type
            assert response.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    scripts = [url for tag, _, url in page.refs if tag == "script"]
    # maplibre-gl-compare extends window.maplibregl: it must come after MapLibre, the app after both.
    assert scripts == [
        "static/vendor/maplibre-gl/maplibre-gl.js",
        "static/vendor/maplibre-gl-compare/maplibre-gl-compare.js",
        "static/js/app.js",
    ]


IMPORT = re.compile(r"""(?:^|\s)(?:import|export)\s[^;]*?\sfrom\s+["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']""")


def test_modules_import_only_local_modules() -> None:
    assert JS_FILES
    seen: set[Path] = set()
    for js in JS_FILES:
        text = js.read_text()
        for match in IMPORT.finditer(text):
            spec = match.group(1) or match.group(2)
            assert spec.startswith(("./", "../")), f"{js.name} imports {spec!r}: not a relative module"
            target = (js.parent / spec).resolve()
            assert target.is_file(), f"{js.name} imports {spec!r}, which does not exist"
            seen.add(target)
    # every module is reachable from the page's one entry point
    assert seen | {STATIC_DIR / "js" / "app.js"} == {p.resolve() for p in JS_FILES}


def test_own_files_name_no_other_host() -> None:
    for path in OWN_FILES:
        if path.suffix not in (".html", ".js", ".css", ".svg"):
            continue
        text = path.read_text()
        for url in re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'`)]*", text):
            assert url.startswith(NOT_FETCHED), f"{path.relative_to(STATIC_DIR)} names {url!r}"


def test_css_urls_are_inline_or_local() -> None:
    for css in sorted(STATIC_DIR.rglob("*.css")):
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css.read_text()):
            if url.startswith("data:"):
                continue
            assert not urlsplit(url).scheme and not url.startswith("//"), f"{css.name}: url({url})"
            assert (css.parent / url).is_file(), f"{css.name}: url({url}) does not exist"


def test_vendored_versions_match_the_lock() -> None:
    packages = lock()
    pins = json.loads((FRONTEND / "package.json").read_text())["dependencies"]
    assert set(pins) == set(VENDORED), "package.json pins other packages than those vendored"
    record = (VENDOR / "VENDOR.md").read_text()
    for name, (folder, _files) in VENDORED.items():
        locked = packages[f"node_modules/{name}"]
        assert pins[name] == locked["version"], f"{name}: package.json pins {pins[name]}, the lock has {locked}"
        vendored = json.loads((VENDOR / folder / "package.json").read_text())
        assert (vendored["name"], vendored["version"]) == (name, locked["version"]), f"vendor/{folder} is stale"
        row = next((line for line in record.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"VENDOR.md has no row for {name}"
        assert f"| {locked['version']} |" in row and locked["integrity"] in row, f"VENDOR.md's {name} row is stale"
        assert locked["license"] in row
    maplibre = packages["node_modules/maplibre-gl"]["version"]
    assert maplibre.split(".")[0] == "5", "maplibre-gl-compare needs MapLibre 5's UMD build"
    header = (VENDOR / "maplibre-gl" / "maplibre-gl.js").read_text()[:400]
    assert f"/v{maplibre}/LICENSE.txt" in header, "maplibre-gl.js is not the locked release"


def test_vendored_files_are_the_installed_packages() -> None:
    """With ``make vendor-frontend``'s node_modules present, the vendored files are byte for byte its files."""
    modules = FRONTEND / "node_modules"
    if not modules.is_dir():
        pytest.skip("frontend/node_modules is absent (`make vendor-frontend` installs it)")
    packages = lock()
    for name, (folder, files) in VENDORED.items():
        installed = modules / name
        version = json.loads((installed / "package.json").read_text())["version"]
        if version != packages[f"node_modules/{name}"]["version"]:
            pytest.skip(f"frontend/node_modules has {name} {version}, not the locked one: run `make vendor-frontend`")
        for file in files:
            theirs = hashlib.sha256((installed / file).read_bytes()).hexdigest()
            ours = hashlib.sha256((VENDOR / folder / Path(file).name).read_bytes()).hexdigest()
            assert ours == theirs, f"vendor/{folder}/{Path(file).name} differs from {name}'s {file}"


def test_base_url_follows_the_mount_point() -> None:
    inner = FastAPI()
    inner.include_router(operator.router)
    outer = FastAPI()
    outer.mount("/lcms", inner)
    with TestClient(outer) as client:
        response = client.get("/lcms/")
        assert response.status_code == 200
        parsed = _Page()
        parsed.feed(response.text)
        assert parsed.base == "/lcms/"
        for _tag, _attr, url in parsed.refs:
            assert client.get(urljoin("/lcms/", url)).status_code == 200, url


def test_page_headers(client: TestClient) -> None:
    response = client.get("/")
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no other host
    assert directives["connect-src"] == "'self'"
    assert "blob:" in directives["worker-src"]  # MapLibre's worker
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/missing.js",
        "/static/%2e%2e/routers/operator.py",
        "/static/js/%2e%2e/%2e%2e/app.py",
        "/static//etc/passwd",
        "/static/..%2f..%2fapp.py",
    ],
)
def test_static_paths_stay_in_the_folder(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_modules_find_their_elements(page: _Page) -> None:
    missing: dict[str, list[str]] = {}
    for js in JS_FILES:
        for element_id in re.findall(r"""\$\(\s*["'`]#([A-Za-z][\w-]*)["'`]""", js.read_text()):
            if element_id not in page.ids:
                missing.setdefault(js.name, []).append(element_id)
    assert missing == {}, f"ids the modules use but the page lacks: {missing}"


def test_every_form_control_has_a_label(page: _Page) -> None:
    assert page.controls
    unlabelled = [
        c.get("id", c.get("name", "?"))
        for c in page.controls
        if c.get("id") not in page.label_for and c["_in_label"] != "True" and not c.get("aria-label")
    ]
    assert unlabelled == []


def test_the_page_says_how_to_get_an_account(page: _Page, client: TestClient) -> None:
    assert "lcms users add NAME --role validator --config CONFIG" in client.get("/").text


def test_the_service_app_serves_the_application() -> None:
    """The real app (its middleware: compression, cache control, mount scope) at / and mounted as in Airflow."""
    from lcms_service.app import create_app
    from lcms_service.settings import ServiceSettings

    settings = ServiceSettings(
        database_url="postgresql://nobody@127.0.0.1:1/none",  # never opened: the lifespan does not run here
        require_database=False,
        embedded_database=False,
    )
    outer = FastAPI()
    outer.mount("/lcms", create_app(settings))
    for app, prefix in ((create_app(settings), ""), (outer, "/lcms")):
        client = TestClient(app)  # not entered: no lifespan, no database
        response = client.get(f"{prefix}/")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        parsed = _Page()
        parsed.feed(response.text)
        assert parsed.base == f"{prefix}/"
        for _tag, _attr, url in parsed.refs:
            assert client.get(urljoin(f"{prefix}/", url)).status_code == 200, url
        js = client.get(f"{prefix}/static/js/api.js", headers={"Accept-Encoding": "gzip"})
        assert js.status_code == 200 and js.content == (STATIC_DIR / "js" / "api.js").read_bytes()
