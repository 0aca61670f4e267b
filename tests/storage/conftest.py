import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.storage.backends import aws_env, backend, moto_endpoint, store  # noqa: E402,F401
