"""The benchmark's shared pieces; the entry scripts are bench/*.py.

Importing this package puts the repository root on sys.path (after bench/),
for testkit/: the code bench/ shares with tests/."""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
