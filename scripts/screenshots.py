"""PNG screenshots of the documentation site as a reader sees it, rendered by headless Chromium.

Reviewers look at these instead of building and serving the site themselves. The script
builds the site (``mkdocs build --strict``) when ``site/`` is missing or ``--build`` is
given, serves ``site/`` on a free port of 127.0.0.1, and has Chromium render each page at a
desktop window size. Chromium comes from Debian (``apt-get install chromium``); set
``CHROMIUM`` to use another binary.

    python scripts/screenshots.py                      # site-screenshots/*.png
    python scripts/screenshots.py --page faces=faces/  # another page too
    python scripts/screenshots.py --height 6000        # more of each page
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: file name -> the page's path in the site: the home page, a tutorial and the hooks reference.
PAGES = {"home": "", "writing-plugins": "writing-plugins/", "hooks-reference": "reference/hooks/"}
PNG = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> str:
    for name in [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]:
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("error: Chromium not found; install it (Debian: apt-get install chromium) or set CHROMIUM=/path/to/chrome")


def build_site(site: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT, env=env,
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"error: mkdocs build --strict failed:\n{result.stderr.strip()}")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # one line per request would drown the script's output
        pass


def serve(site: Path) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``site`` on a free localhost port, in a daemon thread (Material needs http://, not file://)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def screenshot(chromium: str, url: str, out: Path, width: int, height: int) -> None:
    """One page, one PNG: Chromium's own --screenshot, no driver library needed."""
    with tempfile.TemporaryDirectory(prefix="convgen-chromium-") as profile:
        command = [
            chromium, "--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run",
            "--no-default-browser-check", f"--user-data-dir={profile}", f"--window-size={width},{height}",
            "--virtual-time-budget=8000",  # let scripts, fonts and highlighting settle before the capture
            f"--screenshot={out}", url,
        ]  # fmt: skip
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not out.is_file() or out.read_bytes()[:8] != PNG:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"error: Chromium did not write {out} for {url} (exit {result.returncode}: {detail})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "site-screenshots", help="folder for the PNGs")
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="the built site")
    parser.add_argument("--build", action="store_true", help="rebuild the site first")
    parser.add_argument("--page", action="append", default=[], metavar="NAME=PATH", help="another page (PATH in the site)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600, help="window height: the capture's height, in pixels")
    args = parser.parse_args(argv)

    pages = dict(PAGES)
    for item in args.page:
        name, sep, path = item.partition("=")
        if not sep or not name:
            parser.error(f"--page takes NAME=PATH, got {item!r}")
        pages[name] = path
    chromium = find_chromium()
    if args.build or not (args.site / "index.html").is_file():
        print(f"building the site into {args.site}")
        build_site(args.site)
    missing = [path for path in pages.values() if not (args.site / path / "index.html").is_file()]
    if missing:
        sys.exit(f"error: {args.site} has no page {missing[0]!r}; rebuild it with --build")

    args.out.mkdir(parents=True, exist_ok=True)
    server = serve(args.site)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        for name, path in pages.items():
            out = args.out / f"{name}.png"
            screenshot(chromium, base + path, out, args.width, args.height)
            print(f"wrote {out}")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
