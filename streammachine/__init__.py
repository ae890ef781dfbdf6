"""StreamMachine: Jupyter-native stream processing on Redis Streams.

The names below are the reference API. The pandas/OHLC/object-storage names
are imported on first use, so ``import streammachine`` stays light (and
never needs IPython).
"""

from importlib import metadata as _metadata

from streammachine._lazy import lazy_getattr
from streammachine._speedups import _has_cython_decode, decode_dict_bytes_to_utf8
from streammachine.app import App
from streammachine.config import AppConfig, ConsumerConfig, Settings, TimerConfig
from streammachine.engine.consumer import StreamConsumer
from streammachine.message import Message
from streammachine.redis.connection import RedisConnection
from streammachine.state.storage import Storage

__version__ = _metadata.version("streammachine")

_LAZY = {
    "streams_to_dataframe": "data.frames",
    "streams_to_dataframe_fast": "data.frames",
    "prune_old_dataframe_rows": "data.frames",
    "TimeSeriesBuffer": "data.frames",
    "FastOHLC": "ohlc",
    "FastOHLCConsumer": "ohlc",
    "create_ohlc_aggregator": "ohlc",
    "parse_stream_id_timestamp": "ohlc",
    "format_candle_for_redis": "ohlc",
    "_HAS_FAST_OHLC_CYTHON": "ohlc",
    "RedisObjectStorage": "state.objstore",
    # stages (beyond the reference): routing a handler's result, keyed state
    "Emit": "engine.effects",
    "Table": "state.table",
}

__all__ = [
    "App",
    "StreamConsumer",
    "Message",
    "AppConfig",
    "ConsumerConfig",
    "TimerConfig",
    "Settings",
    "Storage",
    "RedisConnection",
    "decode_dict_bytes_to_utf8",
    "_has_cython_decode",
    *_LAZY,
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def load_ipython_extension(ipython):
    """``%load_ext streammachine``: the magics, imported only here."""
    from streammachine.notebook.magics import load_ipython_extension as load

    load(ipython)
