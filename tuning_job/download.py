"""Init container of the tuning Job: download the input URLs into `/mnt/data`, with retries.

`python -m tuning_job.download --output=/mnt/data URL [URL ...]`. Each file keeps the last
segment of its URL path (so the trainer sees `train.parquet` and knows the format); transient
failures (connection errors, 429, 5xx) are retried with exponential backoff, client errors
are not. Every file is written to a temporary name and renamed, so a restarted container never
trains on half a file. Failure: one line on stderr and in the termination log, exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from tuning_job.errors import DownloadError, report_failure, termination_log

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


def file_name(url: str, index: int, taken: set[str]) -> str:
    """The URL's last path segment (sanitised), made unique within the download."""
    name = Path(unquote(urlparse(url).path)).name.strip()
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".")
    name = name or f"data-{index}"
    if name in taken:
        name = f"{index}-{name}"
    taken.add(name)
    return name


def download(url: str, target: Path, *, retries: int, backoff: float,
             client: httpx.Client) -> int:
    """Stream `url` into `target`; returns the byte count."""
    partial = target.with_name(f".{target.name}.part")
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            with client.stream("GET", url) as resp:
                if resp.status_code in RETRY_STATUSES and not last:
                    raise httpx.HTTPStatusError("retry", request=resp.request, response=resp)
                if resp.status_code >= 400:
                    raise DownloadError(f"download {url}: HTTP {resp.status_code} "
                                        f"{resp.reason_phrase}")
                size = 0
                with partial.open("wb") as out:
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
            partial.replace(target)
            return size
        except (httpx.TransportError, httpx.HTTPStatusError) as err:
            if last:
                host = urlparse(url).netloc
                raise DownloadError(f"download {url}: cannot fetch from {host} after "
                                    f"{retries + 1} attempt(s): {err}") from err
            time.sleep(min(backoff * 2**attempt, 60.0))
    raise AssertionError("unreachable")


def download_all(urls: list[str], output: Path, *, retries: int = 4,
                 backoff: float = 1.0) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    written = []
    timeout = httpx.Timeout(60.0, connect=10.0)
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for index, url in enumerate(urls):
            if urlparse(url).scheme not in ("http", "https"):
                raise DownloadError(f"download {url}: only http(s) URLs are supported")
            target = output / file_name(url, index, taken)
            size = download(url, target, retries=retries, backoff=backoff, client=client)
            print(f"downloaded {url} → {target} ({size} bytes)", flush=True)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuning_job.download",
                                     description="download tuning input URLs")
    parser.add_argument("urls", nargs="+", help="http(s) URLs of dataset files")
    parser.add_argument("--output", default="/mnt/data", help="directory to fill")
    parser.add_argument("--retries", type=int, default=4, help="retries per URL")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry delay (s)")
    parser.add_argument("--termination-log", default=None, help="where the failure line goes")
    args = parser.parse_args(argv)
    try:
        download_all(args.urls, Path(args.output), retries=args.retries, backoff=args.backoff)
    except DownloadError as err:
        report_failure(str(err), termination_log(args.termination_log))
        return 1
    except OSError as err:
        report_failure(f"download: cannot write to {args.output}: {err}",
                       termination_log(args.termination_log))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
