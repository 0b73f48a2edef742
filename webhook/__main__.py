"""``python -m webhook`` entry point."""

import sys

from webhook.cli import main

sys.exit(main())
