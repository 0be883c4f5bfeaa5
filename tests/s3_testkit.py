"""An S3 endpoint on loopback for tests: moto's standalone server, started and stopped by the tests.

`moto_server` (session) starts `moto_server -H 127.0.0.1 -p <free port>` with bounded waits and stops
it at the end; `s3_env` is the AWS_* environment that points s3fs (and ComfyUI servers started by the
tests) at it; `s3_base` makes a fresh bucket per test and sets DATASETE_GATES_STORE to it. Tests that
use them are skipped where moto or s3fs is not installed (pip install -r requirements-dev.txt).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

STARTUP_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto_command(port: int) -> list[str]:
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if Path(exe).exists():
        return [exe, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


class MotoServer:
    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(_moto_command(self.port), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode} before listening")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not listen on {self.url} "
                                       f"within {STARTUP_SECONDS:g} s") from None
                time.sleep(0.05)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.url,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def make_bucket(self, name: str | None = None) -> str:
        import botocore.session

        name = name or f"dsg-{secrets.token_hex(5)}"
        session = botocore.session.get_session()
        client = session.create_client("s3", endpoint_url=self.url, region_name="us-east-1",
                                       aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def have_s3_tools() -> bool:
    try:
        import moto  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def moto_server():
    if not have_s3_tools():
        pytest.skip("moto[server] and s3fs are not installed (pip install -r requirements-dev.txt)")
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    return moto_server.env()


@pytest.fixture
def s3_store(moto_server, s3_env, monkeypatch):
    """A fresh bucket, named in DATASETE_GATES_STORE (with a prefix, as users set it)."""
    from gates.storage import STORE_ENV, parse_store

    bucket = moto_server.make_bucket()
    value = f"s3://{bucket}/studio/gates"
    monkeypatch.setenv(STORE_ENV, value)
    return parse_store(value)


def clear_store_env() -> None:
    os.environ.pop("DATASETE_GATES_STORE", None)
