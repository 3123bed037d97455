"""The pages of one list, each fetched while the one before is being parsed.

A list of 10,000 objects comes in pages of 500 (``limit``/``continue``), and the continue
token of page k+1 is in page k's metadata. Fetched one after the other, the watcher's
thread parses page k, then asks for page k+1 and waits while the API server builds and
sends it. Here a background thread fetches page k+1 as soon as page k has arrived: it
waits on the socket without the GIL while page k is parsed. At most one page waits
ahead in the hand-off, so memory stays bounded at about three pages.

Errors keep their meaning: whatever a fetch raises (an ``ApiException`` such as 410 for
an expired continue token, a connection error, ``ResponseInvalid``) is raised to the
consumer in order, after the pages before it, exactly as if it had fetched itself; the
fetcher then stops. When the consumer leaves early (an error of its own, ``break``,
``close()``) or ``stop`` is set, the fetcher asks for no more pages: it ends after the
request it is in (bounded by that request's timeouts), and nothing is left running.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator

from bgpspeaker.cluster.api import ListPage

__all__ = ["FetchPage", "Stopped", "prefetched_pages"]

FetchPage = Callable[[str | None], ListPage]
"""Fetches and checks one page: the continue token (None: the first page) -> the page."""


class Stopped(Exception):
    """``stop`` was set before the last page: the list is abandoned, not failed."""


class _Failed:
    """What a fetch raised, handed to the consumer to raise there."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_STOPPED = object()
"""Hand-off marker: the fetcher saw ``stop`` and asked for no more pages."""


def prefetched_pages(fetch: FetchPage, *, stop: threading.Event, name: str) -> Generator[ListPage, None, None]:
    """The pages of one list in order, page k+1 fetched (on a thread named ``name``)
    while the consumer handles page k. Raises what a fetch raised, where that page would
    have been; raises ``Stopped`` when ``stop`` is set before the last page.

    Close the iterator when leaving early (``contextlib.closing``): that is what tells the
    fetcher to stop. Ending normally (the last page, or an error raised here) stops it too."""
    handoff: queue.Queue[ListPage | _Failed | object] = queue.Queue(maxsize=1)
    cancel = threading.Event()
    fetcher = threading.Thread(target=_fetch_all, args=(fetch, handoff, cancel, stop), name=name, daemon=True)
    fetcher.start()
    try:
        while True:
            item = handoff.get()
            if isinstance(item, _Failed):
                raise item.error
            if item is _STOPPED:
                raise Stopped()
            assert isinstance(item, ListPage)
            yield item
            if item.continue_token is None:
                return
    finally:
        # After ``cancel`` the fetcher puts at most one more item: one free slot lets it
        # finish that put and end (it looks at ``cancel`` before every request).
        cancel.set()
        try:
            handoff.get_nowait()
        except queue.Empty:
            pass


def _fetch_all(
    fetch: FetchPage,
    handoff: queue.Queue[ListPage | _Failed | object],
    cancel: threading.Event,
    stop: threading.Event,
) -> None:
    """The fetcher thread: every page in order, then ends (after the last page, an error,
    ``cancel`` or ``stop``). Nothing escapes: an error is the consumer's to raise."""
    token: str | None = None
    while not cancel.is_set():
        if stop.is_set():
            handoff.put(_STOPPED)
            return
        try:
            page = fetch(token)
        except BaseException as error:  # noqa: BLE001  # raised again by the consumer, in its thread
            handoff.put(_Failed(error))
            return
        handoff.put(page)
        if page.continue_token is None:
            return
        token = page.continue_token
