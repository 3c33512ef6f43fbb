"""The glue between weir's WIT contract and a plugin's decorated function (not for plugins)."""

import inspect
import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

import weir
from weir import Fail, Record, _current, _plugin


def _message(error):
    if isinstance(error, Fail):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _records(batch):
    arena = batch.arena
    topics = batch.topics
    refs = batch.headers
    records = []
    for e in batch.events:
        k, v, h = e.key, e.value, e.headers
        headers = [
            (arena[r.key.start:r.key.start + r.key.len].decode(),
             arena[r.value.start:r.value.start + r.value.len])
            for r in refs[h.start:h.start + h.len]
        ]
        records.append(Record(
            None if k is None else arena[k.start:k.start + k.len],
            None if v is None else arena[v.start:v.start + v.len],
            headers, e.timestamp, topics[e.topic], e.partition, e.offset))
    return records


class _Out:
    """An out-batch being written."""

    def __init__(self):
        self.arena = bytearray()
        self.headers = []
        self.outputs = []

    def span(self, data):
        start = len(self.arena)
        self.arena += data
        return types.Span(start, len(data))

    def part(self, new, old):
        if new is old or new == old:
            return types.Part_Same()
        if new is None:
            return types.Part_Absent()
        return types.Part_Bytes(self.span(new))

    def add(self, index, record, out):
        headers = None
        if out.headers is not record.headers and out.headers != record.headers:
            start = len(self.headers)
            for key, value in out.headers:
                self.headers.append(types.HeaderRef(self.span(key.encode()), self.span(value)))
            headers = types.Span(start, len(out.headers))
        self.outputs.append(types.OutputRef(
            index, self.part(out.key, record.key), self.part(out.value, record.value), headers,
            out.timestamp))


# What `init` made of the plugin's function: it called with one record. (componentize-py makes
# a `WitWorld` for each call, so nothing is kept on it.)
_call = [None]


class WitWorld(wit_world.WitWorld):
    def init(self):
        if "function" not in _plugin:
            raise Err("the plugin has no @weir.filter or @weir.transform function")
        function = _plugin["function"]
        arity = len(inspect.signature(function).parameters)
        try:
            config = json.loads(host.config())
            if "config" in _plugin:
                config = _plugin["config"](config)
        except Exception as e:
            raise Err(f"bad config: {_message(e)}")
        state = weir.State()
        extra = (config, state)[:max(arity - 1, 0)]
        _call[0] = lambda record: function(record, *extra)

    def filter(self, batch):
        keep, errors, call = [], [], _call[0]
        for i, record in enumerate(_records(batch)):
            _current[0] = i
            try:
                keep.append(bool(call(record)))
            except Exception as e:
                keep.append(False)
                errors.append((i, _message(e)))
        return types.Verdicts(keep, errors)

    def transform(self, batch):
        out, errors, call = _Out(), [], _call[0]
        for i, record in enumerate(_records(batch)):
            _current[0] = i
            try:
                result = call(record)
            except Exception as e:
                errors.append((i, _message(e)))
                continue
            if result is None:
                continue
            for one in [result] if isinstance(result, Record) else result:
                out.add(i, record, one)
        return types.OutBatch(bytes(out.arena), out.headers, out.outputs, errors)
