"""Init container of the tuning Job: download the input URLs into `/mnt/data`, with retries.

`python -m tuning_job.download --output=/mnt/data URL [URL ...]`. Each file keeps the last
segment of its URL path (so the trainer sees `train.parquet` and knows the format); transient
failures (connection errors, 408, 429, 5xx) are retried with exponential backoff, client errors
are not. Every connection and redirect hop goes through the egress guard (`kaito_egress`):
loopback, link-local, metadata and (unless `--allow-private`) private addresses are refused
however the host is spelled or resolves. The transfer is bounded by an overall deadline, a
minimum rate, a per-file and a total byte cap and a decompression-ratio cap. Every file is
written to a temporary name and renamed, so a restarted container never trains on half a file.
Failure: one line on stderr and in the termination log, exit code 1, partial files removed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from kaito_egress.flags import add_limit_flags, at_most, limits_from
from kaito_egress.guard import EgressError, EgressGuard
from kaito_egress.http import guarded_client, open_stream, parse_url, raw_chunks
from kaito_egress.limits import (
    Budget,
    ContentError,
    Deadline,
    GiB,
    LimitExceeded,
    TransferLimits,
    copy_bounded,
    human,
)
from kaito_workload.termination import report_failure, termination_log
from tuning_job.errors import DownloadError

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
DEFAULT_LIMITS = TransferLimits(deadline_s=3600.0, max_file_bytes=10 * GiB,
                                max_total_bytes=20 * GiB)


class _Retry(Exception):
    """A transient HTTP status: try again."""


def file_name(url: str, index: int, taken: set[str]) -> str:
    """The URL's last path segment (sanitised), made unique within the download."""
    name = Path(unquote(urlsplit(url).path)).name.strip()
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".")
    name = name or f"data-{index}"
    if name in taken:
        name = f"{index}-{name}"
    taken.add(name)
    return name


def declared_length(resp: httpx.Response, url: str, limits: TransferLimits) -> int | None:
    """The Content-Length, refused up front when it is malformed or above the per-file cap."""
    value = resp.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ContentError(f"download {url}: malformed Content-Length {value[:40]!r}")
    length = int(value)
    if length > limits.max_file_bytes:
        raise LimitExceeded(f"download {url}: the server declares {length} bytes, more than "
                            f"the per-file cap of {human(limits.max_file_bytes)}")
    return length


def _attempt(url: str, partial: Path, *, client: httpx.Client, guard: EgressGuard,
             limits: TransferLimits, deadline: Deadline, budget: Budget, last: bool) -> int:
    resp = open_stream(client, guard, url, deadline=deadline, read_timeout=limits.rate_window_s,
                       connect_timeout=limits.connect_timeout_s,
                       headers={"Accept-Encoding": "gzip, deflate"})
    with contextlib.closing(resp):
        if resp.status_code in RETRY_STATUSES and not last:
            raise _Retry(f"HTTP {resp.status_code} {resp.reason_phrase}")
        if resp.status_code >= 400:
            raise DownloadError(f"download {url}: HTTP {resp.status_code} {resp.reason_phrase}")
        declared = declared_length(resp, url, limits)
        with partial.open("wb") as out:
            return copy_bounded(raw_chunks(resp), out, limits=limits,
                                what=f"download {url}", deadline=deadline, budget=budget,
                                encoding=resp.headers.get("content-encoding", "identity"),
                                declared=declared)


def download(url: str, target: Path, *, retries: int, backoff: float, client: httpx.Client,
             guard: EgressGuard, limits: TransferLimits = DEFAULT_LIMITS,
             deadline: Deadline | None = None, budget: Budget | None = None) -> int:
    """Stream `url` into `target` under the guard and the limits; returns the byte count."""
    deadline = deadline or Deadline(limits.deadline_s, f"download {url}")
    budget = budget or Budget(limits.max_total_bytes, "the downloaded files")
    partial = target.with_name(f".{target.name}.part")
    for attempt in range(retries + 1):
        last, before = attempt == retries, budget.used
        try:
            size = _attempt(url, partial, client=client, guard=guard, limits=limits,
                            deadline=deadline, budget=budget, last=last)
            partial.replace(target)
            return size
        except (httpx.TransportError, _Retry) as err:
            partial.unlink(missing_ok=True)
            budget.used = before
            if last:
                host = urlsplit(url).netloc
                raise DownloadError(f"download {url}: cannot fetch from {host} after "
                                    f"{retries + 1} attempt(s): {err}") from err
        except EgressError as err:
            raise DownloadError(str(err) if str(err).startswith("download ")
                                else f"download {url}: {err}") from err
        except httpx.HTTPError as err:
            raise DownloadError(f"download {url}: {type(err).__name__}: {err}") from err
        finally:
            partial.unlink(missing_ok=True)
        time.sleep(min(backoff * 2**attempt, 60.0, deadline.remaining()))
    raise AssertionError("unreachable")


def download_all(urls: list[str], output: Path, *, retries: int = 4, backoff: float = 1.0,
                 limits: TransferLimits = DEFAULT_LIMITS, guard: EgressGuard | None = None,
                 transport: httpx.BaseTransport | None = None) -> list[Path]:
    """Download every URL into `output`; the deadline and the total cap cover all of them."""
    guard = guard or EgressGuard.from_env()
    for url in urls:
        try:
            parse_url(url, guard.policy)
        except EgressError as err:
            raise DownloadError(f"download {url}: {err}") from err
    output.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    written: list[Path] = []
    deadline = Deadline(limits.deadline_s, "the download")
    budget = Budget(limits.max_total_bytes, "the downloaded files")
    with guarded_client(guard, transport=transport) as client:
        for index, url in enumerate(urls):
            target = output / file_name(url, index, taken)
            try:
                size = download(url, target, retries=retries, backoff=backoff, client=client,
                                guard=guard, limits=limits, deadline=deadline, budget=budget)
            except DownloadError:
                for done in written:
                    done.unlink(missing_ok=True)
                raise
            print(f"downloaded {url} → {target} ({size} bytes)", flush=True)
            written.append(target)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuning_job.download",
                                     description="download tuning input URLs")
    parser.add_argument("urls", nargs="+", help="http(s) URLs of dataset files")
    parser.add_argument("--output", default="/mnt/data", help="directory to fill")
    parser.add_argument("--retries", type=at_most(20), default=4, help="retries per URL")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry delay (s)")
    add_limit_flags(parser, DEFAULT_LIMITS, file_flag="--max-file-bytes", help_={
        "deadline": "seconds for all the downloads together",
        "file": "cap on one file (decompressed)",
        "total": "cap on all files together (decompressed)",
        "ratio": "largest decompression ratio of a compressed transfer",
        "private": "allow private (RFC 1918, CGNAT, ULA) addresses"})
    parser.add_argument("--termination-log", default=None, help="where the failure line goes")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return 0
        report_failure("download: invalid arguments (see usage above)", termination_log(None))
        return 1
    log = termination_log(args.termination_log)
    limits = limits_from(args)
    try:
        download_all(args.urls, Path(args.output), retries=args.retries, backoff=args.backoff,
                     limits=limits, guard=EgressGuard.from_env(allow_private=args.allow_private))
    except DownloadError as err:
        report_failure(str(err), log)
        return 1
    except OSError as err:
        report_failure(f"download: cannot write to {args.output}: {err}", log)
        return 1
    except Exception as err:  # noqa: BLE001 - the pod must say why, whatever broke
        report_failure(f"download: unexpected {type(err).__name__}: {err}", log)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
