"""``python -m serving.server``: the local TensorFlow-Serving-compatible server."""

import sys

from serving.server.app import main

sys.exit(main())
