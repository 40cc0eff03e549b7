"""``python -m inference_server``: flags → settings → uvicorn serving ``create_app(settings)``.

A model that fails to load (missing files, a broken adapter) makes the process exit with status 1
after logging the reason, so the pod crash-loops visibly instead of staying unready forever.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from .settings import parse_args

    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import uvicorn

    from .app import create_app

    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_failure(exc: BaseException) -> None:
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=on_load_failure)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower()
    )
    server = uvicorn.Server(config)
    server.run()
    if failed:
        print(f"inference server: model failed to load: {failed[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
