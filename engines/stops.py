"""Stop-sequence matching over streamed text, shared by the engines that decode themselves."""


class StopMatcher:
    """Holds back text that might be the start of a stop sequence.

    Streaming engines feed each decoded delta in; what comes out is safe to send to the
    client. Text that could still turn into a stop sequence is withheld until it cannot.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]):
        self.stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False
        # The stop sequence that ended the text (the earliest in it), for protocols that report it.
        self.matched: str | None = None

    def feed(self, delta: str) -> str:
        """Return the part of `delta` (plus withheld text) that is safe to emit."""
        if self.stopped:
            return ""
        text = self._pending + delta
        if not self.stops:
            return text
        cut, stop = min(((text.find(s), s) for s in self.stops if s in text), default=(-1, None))
        if stop is not None:
            self.stopped = True
            self.matched = stop
            self._pending = ""
            return text[:cut]
        hold = max((self._partial_suffix(text, s) for s in self.stops), default=0)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """Release withheld text once generation ends without hitting a stop."""
        text, self._pending = self._pending, ""
        return "" if self.stopped else text

    @staticmethod
    def _partial_suffix(text: str, stop: str) -> int:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                return size
        return 0
