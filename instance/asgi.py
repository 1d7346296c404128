"""The ASGI entry point for Hypercorn worker processes (`fieldcast serve --workers N`).

Settings come from FIELDCAST_DATA_DIR / FIELDCAST_CONFIG and the environment, which
`fieldcast serve` sets before it starts the workers. This is an entry point: it reads
the process environment and hands it to the loader.
"""

import os

from instance.app import create_app, prepare_serving_process
from instance.config import load_settings

_settings = load_settings(environ=os.environ)
app = create_app(_settings)
prepare_serving_process(_settings)
