"""A small client of a language server over stdio (JSON-RPC with Content-Length frames).

Enough to open YAML files in yaml-language-server, the engine of VS Code's YAML
extension, and collect what an editor would show: diagnostics, completions, hover.
Every read is bounded by a deadline.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any


class LanguageServer:
    def __init__(self, command: list[str], root: Path) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
        self.buffer = b""
        self.next_id = 1
        self.diagnostics: dict[str, list[dict[str, Any]]] = {}
        self.request("initialize", {"processId": None, "rootUri": root.as_uri(),
                                    "capabilities": {"workspace": {"configuration": True}}})
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration",
                    {"settings": {"yaml": {"validate": True, "hover": True, "completion": True,
                                           "schemaStore": {"enable": False}}}})

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> LanguageServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- wire -------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            if b"\r\n\r\n" in self.buffer:
                head, rest = self.buffer.split(b"\r\n\r\n", 1)
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    message: dict[str, Any] = json.loads(rest[:length])
                    return message
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 1 << 20)
                if not chunk:
                    raise RuntimeError("the language server exited")
                self.buffer += chunk
        return None

    def _handle(self, message: dict[str, Any]) -> None:
        """Answer the server's own requests; keep the diagnostics it publishes."""
        method = message.get("method")
        if method == "textDocument/publishDiagnostics":
            self.diagnostics[message["params"]["uri"]] = message["params"]["diagnostics"]
        elif method == "workspace/configuration":
            items = message["params"]["items"]
            self._send({"id": message["id"], "result": [{"validate": True}] * len(items)})
        elif method is not None and "id" in message:
            self._send({"id": message["id"], "result": None})

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        ident = self.next_id
        self.next_id += 1
        self._send({"id": ident, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while (message := self._receive(deadline)) is not None:
            if message.get("id") == ident and "method" not in message:
                return message.get("result")
            self._handle(message)
        raise TimeoutError(f"no answer to {method} in {timeout} s")

    # -- what an editor does ----------------------------------------------------------------

    def open(self, path: Path) -> str:
        uri = path.resolve().as_uri()
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "yaml", "version": 1,
            "text": path.read_text(encoding="utf-8")}})
        return uri

    def diagnostics_of(self, paths: list[Path], timeout: float = 120) -> dict[Path, list[Any]]:
        """Open each file and wait until the server has published its diagnostics."""
        uris = {self.open(p): p for p in paths}
        deadline = time.monotonic() + timeout
        while not set(uris) <= set(self.diagnostics):
            message = self._receive(deadline)
            if message is None:
                raise TimeoutError(f"no diagnostics for {set(uris) - set(self.diagnostics)}")
            self._handle(message)
        return {path: self.diagnostics[uri] for uri, path in uris.items()}

    def at(self, method: str, path: Path, line: int, column: int) -> Any:
        """A completion or hover request at a 1-based line and column."""
        return self.request(method, {"textDocument": {"uri": path.resolve().as_uri()},
                                     "position": {"line": line - 1, "character": column - 1}})
