import sys

from convcore.cli import main

sys.exit(main())
