"""Settings, read from the environment through one `env` object (django-environ), one module per integration.

No environment at all gives the embedded default: SQLite, in-process engine host. DEBUG is on,
except under `manage.py serve` (./run.sh), which manage.py starts with DEBUG off unless asked.
Setting REDIS_URL switches to distributed mode. Importing the settings creates no file or
directory: inference_platform.startup prepares what they name.
"""

from .api import *  # noqa: F403
from .channel_layers import *  # noqa: F403
from .core import *  # noqa: F403
from .distributed import *  # noqa: F403
from .environment import *  # noqa: F403
from .limits import *  # noqa: F403
from .monitoring import *  # noqa: F403
from .serving import *  # noqa: F403
from .workers import *  # noqa: F403
