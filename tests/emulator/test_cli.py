"""`civflow emulator` serves until interrupted and then exits cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx

from civflow.cli import cli


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_emulator_command_serves_and_stops_on_ctrl_c() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "civflow", "emulator", "--port", str(port), "--time-scale", "0",
         "--api-key", "secret"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        announced = process.stderr.readline()
        assert f"http://127.0.0.1:{port}" in announced
        with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                          transport=httpx.HTTPTransport(retries=5)) as client:
            response = None
            for _ in range(400):  # the command announces itself just before it binds
                try:
                    response = client.post(
                        "/v2/consumer/workflows", params={"wait": 30},
                        headers={"Authorization": "Bearer secret"},
                        json={"steps": [{"$type": "echo", "input": {"message": "cli"}}]})
                    break
                except httpx.TransportError:
                    process.poll()
                    assert process.returncode is None, process.stderr.read()
                    time.sleep(0.05)
            assert response is not None and response.status_code == 200
            assert response.json()["steps"][0]["output"] == {"message": "cli"}
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped" in err


def test_emulator_command_help_lists_fault_flags() -> None:
    command = cli.get_command(None, "emulator")  # type: ignore[arg-type]
    assert command is not None
    names = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {"--port", "--time-scale", "--buzz", "--api-key", "--state-dir", "--error-rate",
            "--drop-rate", "--rate-limit", "--step-failure-rate"} <= names
