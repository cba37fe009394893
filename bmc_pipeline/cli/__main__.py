"""``python -m bmc_pipeline.cli``: the same as ``bmc-backup``."""

import sys

from bmc_pipeline.cli import main

sys.exit(main())
