"""Shared reporting for the benchmark scripts: robust summaries, ratios, target lines.

Every script prints its own figure beside an anchor measured in the same run, as medians
over repeated runs with their spread, and says whether the target is met. A benchmark never
fails on a number: the scripts always exit 0 once they have measured.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements, in the unit they were taken in."""

    n: int
    median: float
    p10: float
    p90: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarise")
        return cls(
            n=len(samples),
            median=statistics.median(samples),
            p10=percentile(samples, 10),
            p90=percentile(samples, 90),
            minimum=min(samples),
            maximum=max(samples),
        )


def percentile(samples: Sequence[float], percent: float) -> float:
    """Return the ``percent``-th percentile, interpolated linearly between order statistics."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * percent / 100.0
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def print_header(title: str) -> None:
    """Print what is measured and on what machine, so a quoted figure keeps its context."""
    print(title)
    print(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPU(s); executable {sys.executable}"
    )
    print()


def print_table(rows: Sequence[tuple[str, Summary]], unit: str, digits: int = 2) -> None:
    """Print one line per measurement: n, median, p10/p90 and min/max."""
    width = max(len(label) for label, _ in rows)
    print(f"{'':<{width}}  {'n':>3}  {'median':>10}  {'p10':>10}  {'p90':>10}  {'min':>10}  "
          f"{'max':>10}  [{unit}]")
    for label, summary in rows:
        print(
            f"{label:<{width}}  {summary.n:>3}  {summary.median:>10.{digits}f}  "
            f"{summary.p10:>10.{digits}f}  {summary.p90:>10.{digits}f}  "
            f"{summary.minimum:>10.{digits}f}  {summary.maximum:>10.{digits}f}"
        )


def print_ratio(
    name: str, ours: Sequence[float], anchor: Sequence[float], target: float | None
) -> float:
    """Print ours/anchor as a ratio of medians (the quoted figure) and of paired runs.

    ``ours`` and ``anchor`` are taken interleaved, so run ``i`` of each shares the machine's
    state; the median of the per-pair ratios is printed beside the ratio of medians as a
    check that one noisy stretch did not decide the result.

    Args:
        target: the highest ratio the issue accepts; ``None`` for a figure given for context.

    Returns:
        The ratio of medians.
    """
    ratio = statistics.median(ours) / statistics.median(anchor)
    line = f"{name}: ratio of medians {ratio:.3f}x"
    if len(ours) == len(anchor):
        paired = Summary.of([o / a for o, a in zip(ours, anchor, strict=True)])
        line += (f" (paired ratios: median {paired.median:.3f}x, p10 {paired.p10:.3f}x, "
                 f"p90 {paired.p90:.3f}x)")
    print(line)
    if target is not None:
        print(f"  target <= {target:.2f}x: {'MET' if ratio <= target else 'NOT MET'}")
    return ratio


def wrk_post(
    url: str, body: bytes, clients: int, seconds: float, content_type: str = "application/json"
) -> tuple[float, int, int]:
    """``wrk`` (one thread, ``clients`` keep-alive connections) posting ``body`` to ``url``
    for ``seconds``: (requests/s, requests answered, answers that were not 2xx/3xx)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = {json.dumps(content_type)}\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
    try:
        output = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rate, requests, int(failed.group(1)) if failed else 0


def session_cpu_seconds(leader: int) -> float:
    """User + system CPU seconds so far of the processes in the session ``leader`` leads (a
    server started with ``start_new_session=True`` and the workers it forked)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == leader:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def stop_session(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the session ``process`` leads (a server and its workers), SIGKILL it after
    ``timeout`` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
