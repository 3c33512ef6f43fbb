"""Count records per key per window."""

import weir


@weir.window
class Count:
    def create(self, window):
        return 0

    def add(self, count, record):
        return count + 1

    def merge(self, a, b, window):
        return a + b

    def emit(self, window, count):
        key = None if window.key is None else window.key.decode(errors="replace")
        return weir.Record(value=weir.dumps({
            "key": key, "start": window.start, "end": window.end, "count": count,
        }))
