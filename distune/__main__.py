import sys

from distune.cli import main

sys.exit(main())
