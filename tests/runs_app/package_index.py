"""A private package index for tests: PEP 503's simple API over HTTP with basic auth,
serving a wheel and a source archive made here, on an address run containers reach (the
run network's gateway on this host)."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import threading
import zipfile
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.runs_app.conftest import on_a_host_port

PRIVATE_WHEEL = "fastflow_private_demo-1.0-py3-none-any.whl"
COMPILED_SDIST = "needs_compiler-1.0.tar.gz"


def wheel(name: str = "fastflow_private_demo", version: str = "1.0") -> bytes:
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": "VALUE = 'from the private index'\n",
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
        ),
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: fastflow-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(content.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return buffer.getvalue()


def compiled_sdist() -> bytes:
    """A source archive with a C extension: building it needs a compiler."""
    root = "needs_compiler-1.0"
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
        'build-backend = "setuptools.build_meta"\n',
        "setup.py": "from setuptools import Extension, setup\n"
        "setup(name='needs-compiler', version='1.0', "
        "ext_modules=[Extension('needs_compiler', ['fast.c'])])\n",
        "fast.c": "int fast(void) { return 1; }\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: needs-compiler\nVersion: 1.0\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(f"{root}/{path}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class PrivateIndex:
    def __init__(self, host: str, username: str, password: str) -> None:
        self.files = {PRIVATE_WHEEL: wheel(), COMPILED_SDIST: compiled_sdist()}
        self.projects = {"fastflow-private-demo": PRIVATE_WHEEL, "needs-compiler": COMPILED_SDIST}
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.refused = 0
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != index.expected:
                    index.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.end_headers()
                    return
                body = index.answer(self.path)
                self.send_response(200 if body is not None else 404)
                kind = "application/octet-stream" if "/files/" in self.path else "text/html"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body or b"")

            def do_HEAD(self) -> None:
                self.do_GET()

            def log_message(self, *args) -> None:
                pass

        self.server = on_a_host_port(
            partial(ThreadingHTTPServer, RequestHandlerClass=Handler), host
        )
        self.url = f"http://{host}:{self.server.server_port}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str) -> bytes | None:
        if path.startswith("/files/") and path[7:] in self.files:
            return self.files[path[7:]]
        name = path.removeprefix("/simple/").strip("/")
        if name in self.projects:
            file = self.projects[name]
            digest = hashlib.sha256(self.files[file]).hexdigest()
            link = f'<a href="/files/{file}#sha256={digest}">{file}</a>'
            return f"<html><body>{link}</body></html>".encode()
        return None

    def close(self) -> None:
        self.server.shutdown()
