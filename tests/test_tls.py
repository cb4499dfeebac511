"""``serve --tls-cert/--tls-key``: HTTPS and WSS on the one port, through a real process.

* The API, the talk page and a device's voice turn (a typed question, a stand-in LLM's answer
  spoken by the embedded TTS) work over TLS, verified against the test CA; a client that speaks
  plain HTTP to the TLS port gets no answer.
* Bad settings stop ``serve`` at start-up (exit 2) with what is wrong: one flag of the two, a
  missing file, a key that does not match the certificate, an encrypted key.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trustme
from device_fakes import Device, name
from harness import LoopbackServer, spawned_serve
from standins import ChatServer
from websockets.asyncio.client import connect


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pems(ca: trustme.CA, tmp_path_factory) -> tuple[Path, Path]:
    """The server's certificate chain and key for 127.0.0.1, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = folder / "cert.pem", folder / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "echokit_fast", "serve", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_over_tls_answers_https_and_a_device_over_wss(ca, pems) -> None:
    chat = ChatServer()
    chat.reply(["Hello over TLS. ", "Nobody can listen in."])
    llm = LoopbackServer(chat.app)
    cert, key = pems
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    try:
        with spawned_serve(
            "--listen",
            "127.0.0.1:0",
            "--llm-url",
            f"http://{llm.addr}/v1",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ) as seen:
            ports = re.findall(rb"https://127\.0\.0\.1:(\d+)", seen)
            assert ports, seen.decode(errors="replace")
            addr = f"127.0.0.1:{int(ports[-1])}"

            with httpx.Client(verify=trust, timeout=10) as client:
                assert client.get(f"https://{addr}/ready").json() == {"status": "ready"}
                page = client.get(f"https://{addr}/")
                assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            # plain HTTP to the TLS port: the handshake fails, nothing is answered in clear
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://{addr}/version", timeout=10)

            async def turn() -> list:
                ws = await connect(f"wss://{addr}/ws/tls-box", ssl=trust, max_size=2**22)
                device = Device(ws)
                try:
                    await device.command("Text", input="Say hello")
                    return await device.until("EndResponse", timeout=60)
                finally:
                    await device.close()

            events = asyncio.run(turn())
    finally:
        llm.stop()
    names = [name(e) for e in events]
    assert "StartAudio" in names and "EndResponse" in names, names
    spoken = [e["StartAudio"] for e in events if name(e) == "StartAudio"]
    assert "Hello over TLS." in " ".join(str(s) for s in spoken), spoken
    assert any(isinstance(e, dict) and "AudioChunk" in e for e in events), names


def test_one_tls_flag_without_the_other_is_refused(pems) -> None:
    cert, _ = pems
    out = run_serve("--tls-cert", str(cert))
    assert out.returncode == 2
    assert "--tls-cert and --tls-key go together" in out.stderr


def test_a_missing_certificate_file_is_named(pems, tmp_path) -> None:
    _, key = pems
    missing = tmp_path / "nope.pem"
    out = run_serve("--tls-cert", str(missing), "--tls-key", str(key))
    assert out.returncode == 2
    assert f"--tls-cert {missing}: no such file" in out.stderr


def test_a_key_of_another_certificate_is_refused(ca, pems, tmp_path) -> None:
    cert, _ = pems
    other = tmp_path / "other-key.pem"
    other.write_bytes(ca.issue_cert("127.0.0.1").private_key_pem.bytes())
    out = run_serve("--tls-cert", str(cert), "--tls-key", str(other))
    assert out.returncode == 2
    assert "cannot load them as a PEM certificate chain" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_encrypted_key_is_refused_without_a_prompt(pems, tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = pems
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    locked = tmp_path / "locked-key.pem"
    locked.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    out = run_serve("--tls-cert", str(cert), "--tls-key", str(locked))
    assert out.returncode == 2
    assert "the private key is encrypted" in out.stderr
