import sys

from echokit_fast.cli import main

sys.exit(main())
