"""The one exception users see: importable without torch, so light entry points (predict on ONNX) can raise it."""


class FinCompressError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""
