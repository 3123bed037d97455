"""List pages fetched one ahead (bgpspeaker.cluster.pages), with a stand-in page source."""

from __future__ import annotations

import contextlib
import itertools
import threading

import pytest

from bgpspeaker.cluster.api import ListPage
from bgpspeaker.cluster.pages import Stopped, prefetched_pages
from lab.netns import wait_until


class Source:
    """Pages 0, 1, ... (``last``: the final one, None: endless); ``fail_at``: that page raises."""

    def __init__(self, *, last: int | None, fail_at: int | None = None) -> None:
        self.last = last
        self.fail_at = fail_at
        self.tokens: list[str | None] = []
        self.error = RuntimeError("page failed")

    def __call__(self, token: str | None) -> ListPage:
        self.tokens.append(token)
        index = int(token) if token else 0
        if index == self.fail_at:
            raise self.error
        final = self.last is not None and index == self.last
        return ListPage(items=[index], continue_token=None if final else str(index + 1), resource_version="7")


def _alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def test_pages_in_order_each_from_the_token_before() -> None:
    """Every page, in order, each asked for with the continue token of the page before."""
    source = Source(last=3)
    pages = list(prefetched_pages(source, stop=threading.Event(), name="t-pages-order"))
    assert [p.items for p in pages] == [[0], [1], [2], [3]]
    assert source.tokens == [None, "1", "2", "3"]
    wait_until(lambda: not _alive("t-pages-order"), timeout_s=5, desc="fetcher ended")


def test_an_error_comes_after_the_pages_before_it() -> None:
    """A failed fetch is raised to the consumer where its page would have been, the same exception."""
    source = Source(last=None, fail_at=2)
    seen = []
    with pytest.raises(RuntimeError) as raised:
        for page in prefetched_pages(source, stop=threading.Event(), name="t-pages-error"):
            seen.append(page.items)
    assert raised.value is source.error
    assert seen == [[0], [1]]
    assert source.tokens == [None, "1", "2"]
    wait_until(lambda: not _alive("t-pages-error"), timeout_s=5, desc="fetcher ended")


def test_leaving_early_stops_the_fetcher() -> None:
    """Closing after one page of an endless list: the fetcher ends, at most two pages ahead."""
    source = Source(last=None)
    pages = prefetched_pages(source, stop=threading.Event(), name="t-pages-close")
    with contextlib.closing(pages):
        assert next(pages).items == [0]
    wait_until(lambda: not _alive("t-pages-close"), timeout_s=5, desc="fetcher ended")
    assert len(source.tokens) <= 3, source.tokens


@pytest.mark.parametrize("consumed", [0, 1, 2], ids=lambda n: f"after-{n}-pages")
def test_stop_ends_the_list_with_stopped(consumed: int) -> None:
    """``stop`` set mid-list: Stopped is raised (never a partial list taken as whole), the fetcher ends."""
    source = Source(last=None)
    stop = threading.Event()
    pages = prefetched_pages(source, stop=stop, name=f"t-pages-stop-{consumed}")
    with contextlib.closing(pages), pytest.raises(Stopped):
        for page in itertools.islice(pages, consumed):
            assert page.items
        stop.set()
        for _ in pages:
            pass
    wait_until(lambda: not _alive(f"t-pages-stop-{consumed}"), timeout_s=5, desc="fetcher ended")
