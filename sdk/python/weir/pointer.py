"""JSON pointers (RFC 6901), as the Rust SDK's `json::Pointer`."""

from weir import Fail

MISSING = object()


class Pointer:
    def __init__(self, text, tokens):
        self.text, self.tokens = text, tokens

    @staticmethod
    def parse(text, root_ok=False):
        if text == "" and root_ok:
            return Pointer(text, [])
        if not isinstance(text, str) or not text.startswith("/"):
            raise Fail(f"path `{text}` is not a JSON pointer (it must start with `/`)")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/")]
        return Pointer(text, tokens)

    def put(self, doc, value):
        """Put `value` at this pointer in `doc`, making missing parent objects."""
        at = doc
        for i, token in enumerate(self.tokens):
            if not isinstance(at, dict):
                raise Fail(f"cannot put at {self.text}: a parent is not an object")
            if i == len(self.tokens) - 1:
                at[token] = value
                return
            at = at.setdefault(token, {})

    def get(self, doc):
        """The value at this pointer in `doc`, or MISSING."""
        at = doc
        for token in self.tokens:
            if isinstance(at, dict):
                if token not in at:
                    return MISSING
                at = at[token]
            elif isinstance(at, list) and token.isdigit() and (token == "0" or token[0] != "0"):
                index = int(token)
                if index >= len(at):
                    return MISSING
                at = at[index]
            else:
                return MISSING
        return at

    def __str__(self):
        return self.text
