"""Put recorded batches on the queue in the order given, with the real ``start_batch``.

A separate process, as in production: ``workers.app`` reads the broker URL from
the environment when it is imported, once per process.
"""

import sys

from pipeline.settings import load_settings
from workers.dispatch import start_batch

if __name__ == "__main__":
    settings = load_settings()
    for batch_id in sys.argv[1:]:
        start_batch(settings, batch_id)
