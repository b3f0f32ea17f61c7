"""Headless Chromium (Debian's, not a downloaded one) driven by Playwright, for the console's tests."""
from __future__ import annotations

import os
import shutil

from tests.integration.harness import ROOT

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: as root in a sandbox, and quiet on a closed network: no background connections Chromium would make
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]
ARTIFACTS = os.environ.get("MSCHEDULE_ARTIFACTS", os.path.join(ROOT, "artifacts"))
SCREENSHOTS = os.path.join(ARTIFACTS, "screenshots")


def chromium_path() -> str | None:
    """The system's Chromium, or None (the tests then skip and say how to install it)."""
    override = os.environ.get("MSCHEDULE_CHROMIUM")
    for path in (override,) if override else CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None if override else shutil.which("chromium")


def screenshot(page, name: str) -> str:
    """Save a full-page screenshot as ``artifacts/screenshots/<name>.png``; returns its path."""
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    return path
