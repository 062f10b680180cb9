"""A clinical-size DICOM series sent to ``datamint serve`` as multipart, file by file.

The series is written with pydicom from the header of pydicom's ``CT_small.dcm`` (int16,
``SLICES`` x ``SIZE`` x ``SIZE``), then sent as one multipart request: a ``request`` part
and one file part per slice, all under one name (one series). The model is numpy only
(``predict_volume``: a threshold mask), so the figures are the server's own: reading the
body, decoding the series, predicting, answering.

Measured, in one run, for this checkout and (``--baseline DIR``, a checkout of an older
commit) for the anchor: the request's wall time; ``/ping``'s worst latency while the
request runs (polled every 50 ms from another thread); the server process's peak resident
set (``VmHWM``) and its growth over the idle server's, both against the volume's bytes.

Targets (issue #18): ``/ping`` under 1 s throughout; peak RSS <= 3x the volume's bytes.
With ``--slices 1100`` (and the limits raised: ``--max-parts``, ``--max-request-size``) it
is item (e): a series of more than 1000 slices through the server.

Run: ``.venv/core/bin/python bench/clinical_serve.py [--slices 300] [--size 512]
[--baseline /path/to/old/checkout]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import print_header  # noqa: E402


def peak_and_current_rss(pid: int) -> tuple[int, int]:
    values = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) * 1024
    return values["VmHWM"], values["VmRSS"]


def write_body(series: Path, target: Path) -> str:
    """The multipart body on disk (so the client holds none of it); returns its type."""
    from tests.integration._server import encode_parts

    request = {
        "resources": [{"kind": "volume", "pixel_data": {"encoding": "multipart", "part": "ct"}}],
        "params": {"mode": "volume"},
    }
    parts = [("request", None, json.dumps(request).encode(), "application/json")]
    parts += [("ct", p.name, p.read_bytes(), "application/dicom") for p in sorted(series.iterdir())]
    body, content_type = encode_parts(parts)
    target.write_bytes(body)
    return content_type


def measure(checkout: Path, model: Path, body: Path, content_type: str, slices: int) -> dict:
    from tests.integration._server import Server, free_port

    port = free_port()
    command = [
        sys.executable,
        "-P",  # not the working directory first: the checkout given is the one imported
        "-m",
        "datamint_core.cli",
        "serve",
        "-m",
        str(model),
        "--port",
        str(port),
        "--max-request-size",
        "2G",
        "--max-decoded-bytes",
        "4G",
        "--timeout",
        "600",
        "--read-timeout",
        "600",
    ]
    help_text = os.popen(f"cd {checkout} && {sys.executable} -m datamint_core.cli serve -h").read()
    if "--max-parts" in help_text:
        command += ["--max-parts", str(slices + 100)]
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = Server(command, port, log, PYTHONPATH=os.pathsep.join([str(checkout), str(REPO)]))
    worst_ping = 0.0
    done = threading.Event()

    def ping() -> None:
        nonlocal worst_ping
        while not done.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(server.url + "/ping", timeout=30) as response:
                response.read()
            worst_ping = max(worst_ping, time.perf_counter() - started)
            time.sleep(0.05)

    try:
        server.wait_ready()
        time.sleep(1.0)
        _, idle = peak_and_current_rss(server.process.pid)
        pinger = threading.Thread(target=ping, daemon=True)
        pinger.start()
        started = time.perf_counter()
        with open(body, "rb") as stream:
            request = urllib.request.Request(
                server.url + "/invocations",
                data=stream,
                method="POST",
                headers={"Content-Type": content_type, "Content-Length": str(body.stat().st_size)},
            )
            try:
                with urllib.request.urlopen(request, timeout=900) as response:
                    status, answer = response.status, response.read()
            except urllib.error.HTTPError as error:
                status, answer = error.code, error.read()
        wall = time.perf_counter() - started
        done.set()
        pinger.join()
        peak, _ = peak_and_current_rss(server.process.pid)
    finally:
        done.set()
        server.stop()
    return {
        "status": status,
        "wall": wall,
        "ping": worst_ping,
        "peak": peak,
        "idle": idle,
        "answer_bytes": len(answer),
        "message": answer[:300] if status != 200 else b"",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--baseline", type=Path, help="an older checkout to measure beside")
    args = parser.parse_args()
    print_header(f"{args.slices}x{args.size}x{args.size} DICOM series -> datamint serve, multipart")
    warnings.simplefilter("ignore")
    from bench._channel_models import VolumeThreshold
    from datamint_core import save_model
    from tests.core.dicom_files import write_series

    work = Path(tempfile.mkdtemp(prefix="datamint-bench-"))
    series = work / "series"
    write_series(series, args.slices, size=args.size)
    volume_bytes = args.slices * args.size * args.size * 2  # as stored: int16
    save_model(VolumeThreshold(), work / "model")
    content_type = write_body(series, work / "body")
    body_mib = (work / "body").stat().st_size / 2**20
    print(
        f"volume {volume_bytes / 2**20:.0f} MiB (int16); body {body_mib:.0f} MiB, "
        f"{args.slices} file parts"
    )
    checkouts = [("this checkout", REPO)] + ([("baseline", args.baseline)] if args.baseline else [])
    for name, checkout in checkouts:
        found = measure(checkout, work / "model", work / "body", content_type, args.slices)
        if found["status"] != 200:
            print(f"{name}: HTTP {found['status']} {found['message']!r}")
            continue
        print(
            f"{name}: {found['wall']:.1f} s, /ping worst {found['ping'] * 1000:.0f} ms "
            f"(target < 1000 ms: {'met' if found['ping'] < 1 else 'NOT met'}); peak RSS "
            f"{found['peak'] / 2**20:.0f} MiB = {found['peak'] / volume_bytes:.2f}x the volume "
            f"(target <= 3x: {'met' if found['peak'] <= 3 * volume_bytes else 'NOT met'}), "
            f"growth over the idle server ({found['idle'] / 2**20:.0f} MiB) "
            f"{(found['peak'] - found['idle']) / volume_bytes:.2f}x (the decoded volume: "
            "int16 since its Hounsfield values fit 16 bits, int32 before; the model's mask "
            "0.5x); answer "
            f"{found['answer_bytes'] / 2**10:.0f} KiB"
        )


if __name__ == "__main__":
    main()
