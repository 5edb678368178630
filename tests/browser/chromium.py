"""Open a page in headless Chromium and watch it over the DevTools protocol.

Tests use this to look at a page as a person would: load it, let its
scripts run, read the DOM, click, and take a screenshot, while recording
console messages, uncaught exceptions, dialogs (``alert``) and every network
request. It needs Debian's ``chromium`` package and the ``aiohttp`` client,
which the project already installs.

The browser gets a new empty profile, and only the loopback address serves
the DevTools connection.
"""

import asyncio
import base64
import itertools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["BrowserError", "PageSession", "find_chromium", "open_page"]

# Debian's Chromium as root, with no first-run, sync or background traffic.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class BrowserError(RuntimeError):
    """Chromium did not start, or a DevTools call failed or timed out."""


def find_chromium() -> str | None:
    """Return the path of a Chromium binary, or None when none is installed."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageSession:
    """One open page: send DevTools commands and read what the page did."""

    socket: aiohttp.ClientWebSocketResponse
    console: list[tuple[str, str]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future] = field(default_factory=dict)
    _events: dict[str, asyncio.Event] = field(default_factory=dict)

    async def send(self, method: str, timeout: float = 30, **params: Any) -> dict:
        """Call a DevTools method and return its result."""
        number = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        await self.socket.send_json({"id": number, "method": method, "params": params})
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise BrowserError(f"{method} timed out after {timeout} s") from None
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page and return its value."""
        result = await self.send(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise BrowserError(f"{expression!r} stayed false for {timeout} s")
            await asyncio.sleep(0.1)

    async def click(self, x: float, y: float) -> None:
        """Press and release the left mouse button at page coordinates."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=x,
                y=y,
                button="left" if kind != "mouseMoved" else "none",
                clickCount=1 if kind != "mouseMoved" else 0,
            )

    async def screenshot(self, path: Path, full_page: bool = True) -> None:
        """Save a PNG of the whole page, or of what the window shows."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize" if full_page else "cssLayoutViewport"]
        if not full_page:
            size = {"width": size["clientWidth"], "height": size["clientHeight"]}
        shot = await self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            },
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            self._dispatch(message.json())

    def _dispatch(self, message: dict) -> None:
        if "id" in message:
            future = self._pending.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        method = message.get("method", "")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(arg.get("value", arg.get("description", "")))
                for arg in params.get("args", [])
            )
            self.console.append((params.get("type", ""), text))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            error = details.get("exception", {}).get("description")
            self.exceptions.append(error or details.get("text", ""))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append((entry.get("level", ""), entry.get("text", "")))
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params.get("message", ""))
            asyncio.ensure_future(self.send("Page.handleJavaScriptDialog", accept=True))
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))
        self._events.setdefault(method, asyncio.Event()).set()

    async def wait_event(self, method: str, timeout: float = 30) -> None:
        """Wait until the page has sent the DevTools event ``method``."""
        event = self._events.setdefault(method, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise BrowserError(f"no {method} within {timeout} s") from None


class open_page:  # noqa: N801 - used as a context manager, like open()
    """Start Chromium, open ``url`` and yield a :class:`PageSession`.

    ``async with open_page(url) as page:`` returns once the load event fired.
    The browser process and its profile are removed on exit.
    """

    def __init__(
        self, url: str, *, width: int = 1400, height: int = 900, timeout: float = 60
    ) -> None:
        self.url = url
        self.width = width
        self.height = height
        self.timeout = timeout

    async def __aenter__(self) -> PageSession:
        binary = find_chromium()
        if binary is None:
            raise BrowserError("chromium is not installed")
        self._profile = tempfile.TemporaryDirectory(prefix="oddwatch-chromium-")
        profile = Path(self._profile.name)
        self._process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return await self._connect(profile)
        except BaseException:
            await self._close()
            raise

    async def _connect(self, profile: Path) -> PageSession:
        port = await self._debugging_port(profile)
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as reply:
            targets = await reply.json()
        page_url = next(
            t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"
        )
        socket = await self._http.ws_connect(page_url, max_msg_size=0)
        page = PageSession(socket)
        self._reader = asyncio.ensure_future(page._read())
        for domain in ("Runtime", "Log", "Network", "Page"):
            await page.send(f"{domain}.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.send("Page.navigate", url=self.url)
        await page.wait_event("Page.loadEventFired", self.timeout)
        return page

    async def _debugging_port(self, profile: Path) -> int:
        # Chromium writes the port it picked to DevToolsActivePort.
        marker = profile / "DevToolsActivePort"
        for _ in range(int(self.timeout * 10)):
            if marker.exists():
                text = marker.read_text().split()
                if text:
                    return int(text[0])
            if self._process.poll() is not None:
                raise BrowserError(
                    f"chromium exited with code {self._process.returncode} at start"
                )
            await asyncio.sleep(0.1)
        raise BrowserError(f"chromium opened no DevTools port in {self.timeout} s")

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.cancel()
        http = getattr(self, "_http", None)
        if http is not None:
            await http.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._profile.cleanup()
