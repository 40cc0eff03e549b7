"""`python -m tuning_job --config FILE`: see tuning_job.cli."""

import sys

from tuning_job.cli import main

if __name__ == "__main__":
    sys.exit(main())
