"""Headless Chromium for the browser tests and docs/screenshots.py (test support, not the core).

The browser is Debian's ``chromium`` (``make system-deps``), driven by Playwright's Python
client through ``executable_path``: Playwright's own browser builds are never downloaded, so
this works on a machine that only reaches the package registries. ``URBANFABRIC_CHROMIUM``
names another Chromium binary.

Pages load offline by default (Playwright's network emulation: ``navigator.onLine`` is false
and every http(s) request fails), as a user's ``map.html`` opened without a network would.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_ENV = "URBANFABRIC_CHROMIUM"
#: Flags for a container without a display or a GPU: WebGL (the MapLibre viewer) through the
#: SwiftShader software renderer; no sandbox, which needs user namespaces a root container lacks.
CHROMIUM_ARGS = ("--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-dev-shm-usage", "--hide-scrollbars")
#: Hosts a page may reach when it is not offline: this machine only (the local stack, a folder
#: served on loopback); anything else, a basemap's tiles say, fails as it would offline.
LOOPBACK = re.compile(r"^(?:file:|data:|blob:|about:|https?://(?:127\.0\.0\.1|localhost|\[::1\])[:/])")


def chromium_path() -> str | None:
    """The Chromium binary: ``$URBANFABRIC_CHROMIUM``, else ``chromium`` on the PATH."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("chromium")


def missing_reason() -> str | None:
    """Why the browser cannot run here (for a skip), or None when it can."""
    if chromium_path() is None:
        where = os.environ.get(CHROMIUM_ENV) or "chromium on the PATH"
        return f"headless Chromium not found ({where}); `make system-deps` installs Debian's chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (requirements.txt; `make install`)"
    return None


@contextmanager
def launch() -> Iterator[Browser]:
    """A headless Chromium, closed on exit.

    Raises:
        RuntimeError: Chromium or Playwright is missing (the reason says which).
    """
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


class Opened(NamedTuple):
    """A loaded page and the uncaught errors its scripts raised (so far)."""

    page: Page
    errors: list[str]


@contextmanager
def open_page(browser: Browser, url: str, width: int = 1280, height: int = 800, offline: bool = True,
              timeout_s: float = 30) -> Iterator[Opened]:
    """``url`` loaded in a fresh context (no shared cookies or cache), closed on exit; uncaught
    script errors are collected, so a test can assert that the page's script ran cleanly.

    ``offline``: no network at all (``navigator.onLine`` false); otherwise only loopback
    (:data:`LOOPBACK`) answers, so a page shows the same thing on any machine."""
    context = browser.new_context(viewport={"width": width, "height": height}, offline=offline,
                                  device_scale_factor=1)
    context.set_default_timeout(timeout_s * 1000)
    if not offline:
        context.route(lambda u: not LOOPBACK.match(u), lambda route: route.abort("internetdisconnected"))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url, wait_until="load")
        yield Opened(page, errors)
    finally:
        context.close()
