"""Channels: replies of distributed jobs travel over Redis; embedded mode keeps them in memory."""

from .distributed import DISTRIBUTED, REDIS_CONNECTION_OPTIONS, REDIS_URL

if DISTRIBUTED:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Replies are read as they arrive; capacity only guards against a vanished reader.
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        **REDIS_CONNECTION_OPTIONS,
                        # Longer than channels-redis's 5 s blocking pop, which would otherwise race it.
                        "socket_timeout": 30,
                    }
                ],
                "capacity": 1000,
                "expiry": 120,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
