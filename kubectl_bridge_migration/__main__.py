import sys

from kubectl_bridge_migration.cli import main

sys.exit(main(sys.argv[1:]))
