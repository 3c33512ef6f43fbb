"""The glue between weir's WIT contract and a plugin's decorated function (not for plugins)."""

import inspect
import json

import wit_world
from componentize_py_types import Err, Ok
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


# What `init` made of the plugin's function: it called with one record, or the instance of its
# window class. (componentize-py makes a `WitWorld` for each call, so nothing is kept on it.)
_call = [None]
_aggregate = [None]


def _window(w):
    return weir.Window(w.key, w.start, w.end)


def _event(e):
    headers = [(h.key, h.value) for h in e.headers]
    return Record(e.key, e.value, headers, e.timestamp, e.topic, e.partition, e.offset)


def _decode(acc):
    try:
        return json.loads(acc)
    except ValueError as e:
        raise Fail(f"stored accumulator does not decode: {e}") from None


def _encode(acc):
    try:
        return weir.dumps(acc)
    except (TypeError, ValueError) as e:
        raise Fail(f"accumulator does not encode: {e}") from None


def _fold(aggregate, window, acc, events):
    """A pane's accumulator after its events, and the events that failed, by index."""
    acc = aggregate.create(window) if acc is None else _decode(acc)
    errors = []
    for i, event in enumerate(events):
        try:
            new = aggregate.add(acc, _event(event))
        except Exception as e:
            errors.append((i, _message(e)))
            continue
        if new is not None:  # `add` may change the accumulator in place
            acc = new
    return types.PaneResult(_encode(acc), errors)


def _outputs(window, result):
    """A fired window's records as outputs: the window's key and last instant by default."""
    records = [] if result is None else [result] if isinstance(result, Record) else result
    return [
        types.Output(
            window.key if r.key is None else r.key, r.value,
            [types.Header(k, v) for k, v in r.headers],
            window.end - 1 if r.timestamp == 0 else r.timestamp)
        for r in records
    ]


class WitWorld(wit_world.WitWorld):
    def init(self):
        if "function" not in _plugin:
            raise Err("the plugin has no @weir.filter, @weir.transform or @weir.window")
        function = _plugin["function"]
        arity = len(inspect.signature(function).parameters)
        try:
            config = json.loads(host.config())
            if "config" in _plugin:
                check = _plugin["config"]
                # A class (a dataclass, say) is made from the configuration's fields.
                config = check(**config) if inspect.isclass(check) else check(config)
            if _plugin["kind"] == "window":
                _aggregate[0] = function(config) if arity else function()
                return
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

    def accumulate(self, panes):
        results = []
        for pane in panes:
            try:
                results.append(Ok(_fold(_aggregate[0], _window(pane.window), pane.acc,
                                        pane.events)))
            except Exception as e:
                results.append(Err(_message(e)))
        return results

    def merge(self, window, a, b):
        try:
            merged = _aggregate[0].merge(_decode(a), _decode(b), _window(window))
            return _encode(merged)
        except Exception as e:
            raise Err(_message(e))

    def emit(self, fired):
        results = []
        for window, acc in fired:
            try:
                window = _window(window)
                results.append(Ok(_outputs(window, _aggregate[0].emit(window, _decode(acc)))))
            except Exception as e:
                results.append(Err(_message(e)))
        return results
