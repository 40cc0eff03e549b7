"""Command-line flags of the bounded fetchers (adapter fetcher, dataset download).

Both init containers take the same limit flags; only the name and help of the per-file cap
differ (`--max-blob-bytes` for registry blobs, `--max-file-bytes` for downloaded files).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kaito_egress.limits import TransferLimits


def at_most(limit: int) -> Callable[[str], int]:
    """An argparse type: an integer in [0, limit]."""
    def parse(text: str) -> int:
        value = int(text)
        if not 0 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be between 0 and {limit}, not {text}")
        return value
    return parse


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` above zero."""
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value
    return parse


def add_limit_flags(parser: argparse.ArgumentParser, defaults: TransferLimits, *,
                    file_flag: str, help_: dict[str, str]) -> None:
    """`--deadline`, the per-file cap named `file_flag`, `--max-total-bytes`, `--max-ratio`,
    `--min-rate`, `--stall-window` and `--allow-private`; `help_` words the fetch-specific
    ones (keys: deadline, file, total, ratio, private)."""
    parser.add_argument("--deadline", type=positive(float), default=defaults.deadline_s,
                        help=help_["deadline"])
    parser.add_argument(file_flag, dest="max_file_bytes", type=positive(int),
                        default=defaults.max_file_bytes, help=help_["file"])
    parser.add_argument("--max-total-bytes", type=positive(int),
                        default=defaults.max_total_bytes, help=help_["total"])
    parser.add_argument("--max-ratio", type=positive(float), default=defaults.max_ratio,
                        help=help_["ratio"])
    parser.add_argument("--min-rate", type=float, default=defaults.min_rate,
                        help="bytes/s below which a transfer counts as stalled")
    parser.add_argument("--stall-window", type=positive(float), default=defaults.rate_window_s,
                        help="seconds over which --min-rate is measured")
    parser.add_argument("--allow-private", action="store_true", default=None,
                        help=help_["private"])


def limits_from(args: argparse.Namespace) -> TransferLimits:
    """The limits the flags of `add_limit_flags` give."""
    return TransferLimits(deadline_s=args.deadline, max_file_bytes=args.max_file_bytes,
                          max_total_bytes=args.max_total_bytes, max_ratio=args.max_ratio,
                          min_rate=args.min_rate, rate_window_s=args.stall_window)
