import sys

from otel_exec.cli import main

sys.exit(main())
