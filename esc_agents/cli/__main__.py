import sys

from esc_agents.cli.main import main

sys.exit(main())
