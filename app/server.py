"""What the web app may expose, and to whom: start-up checks, per-session bundles, the one served folder.

The rules (see README, "Serving safely"):

- the browser receives only files that lookalike wrote itself into one folder (:class:`ServedFiles`):
  thumbnails and example queries decoded from a bundle's thumbnail pack and encoded again, never a path
  from a bundle's metadata;
- on an address other than loopback the app needs a login, unless the operator says otherwise; training
  from the app always needs one there;
- a bundle trained in the app is written under a name lookalike chooses inside the workspace, and is served
  only to the browser session that trained it (:class:`BundleRegistry`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import ImageDecodeError
from ..data.files import write_atomic
from ..data.thumbnails import PACK_FILE, decode_thumbnail, encode_thumbnail

if TYPE_CHECKING:  # importing the bundle starts TensorFlow: not for the CLI's start-up checks
    from ..bundle import Bundle
    from ..index.search import Hit

logger = logging.getLogger(__name__)

#: Environment variable read for ``USER:PASSWORD`` when ``--auth`` is not given.
AUTH_ENV = "LOOKALIKE_AUTH"
#: Bundles trained in the app kept loaded at once (older ones are loaded again from the workspace on use).
LOADED_BUNDLES = 4


class ServeError(ValueError):
    """The app refuses to start as asked; the message says what to add or change."""


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or a name) reaches this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"USER:PASSWORD"`` -> ``(user, password)``; None for None or an empty string.

    Raises
    ------
    ServeError
        No colon, or an empty user or password.
    """
    if not value:
        return None
    user, colon, password = value.partition(":")
    if not colon or not user or not password:
        raise ServeError("--auth (or $LOOKALIKE_AUTH) must be USER:PASSWORD, both non-empty")
    return user, password


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """How the app is served.

    Attributes
    ----------
    host, port : str, int
        Address to bind; loopback (127.0.0.1) by default.
    auth : (str, str) or None
        User and password of the login page.
    allow_anonymous : bool
        Serve without a login on a non-loopback address (warned about; never with training).
    enable_training : bool
        Offer the Train view and its ``/train`` endpoint.
    data_root : Path or None
        With training: server folders under it may be trained on (else only uploaded zips).
    workspace : Path or None
        With training: where uploads are unpacked and trained bundles written (created if missing).
    """

    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, str] | None = None
    allow_anonymous: bool = False
    enable_training: bool = False
    data_root: Path | None = None
    workspace: Path | None = None

    def check(self) -> ServeOptions:
        """The options with their folders resolved, once they pass the start-up rules.

        Raises
        ------
        ServeError
            Non-loopback without ``auth`` (and without ``allow_anonymous``); training on a non-loopback
            address without ``auth``; training without a workspace; ``data_root`` not a folder.
        """
        local = is_loopback(self.host)
        if self.enable_training and not local and self.auth is None:
            raise ServeError(
                f"--enable-training on {self.host}, which other machines can reach, needs --auth USER:PASSWORD"
            )
        if not local and self.auth is None and not self.allow_anonymous:
            raise ServeError(
                f"{self.host} can be reached from other machines: give --auth USER:PASSWORD (or set "
                f"${AUTH_ENV}), or --allow-anonymous to serve without a login"
            )
        if not local and self.auth is None:
            logger.warning(
                "serving on %s WITHOUT a login (--allow-anonymous): anyone who reaches it can use it", self.host
            )
        if self.enable_training and self.workspace is None:
            raise ServeError("--enable-training needs --workspace DIR: the folder trained bundles are written to")
        data_root = self.data_root.expanduser().resolve() if self.data_root else None
        if data_root is not None and not data_root.is_dir():
            raise ServeError(f"--data-root {self.data_root} is not a folder")
        workspace = self.workspace.expanduser().resolve() if self.workspace else None
        return replace(self, data_root=data_root, workspace=workspace)


class BundleRegistry:
    """The bundles the app answers with: the one it was started with, and the ones its users trained.

    Each browser session keeps a key in server-side session state (``gr.State``); a key is a random token
    that only the session that trained the bundle receives, so one user's training never changes what
    another is served.
    """

    def __init__(self, bundle: Bundle):
        self.default = bundle
        self._paths: dict[str, Path] = {}
        self._loaded: OrderedDict[str, Bundle] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, bundle: Bundle) -> str:
        """Register a saved bundle; returns the key of the session that may use it."""
        if bundle.path is None:
            raise ValueError("only a saved bundle can be served")
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._paths[key] = bundle.path
            self._remember(key, bundle)
        return key

    def get(self, key: str | None) -> Bundle:
        """The bundle of the session holding ``key``; the default bundle for None or an unknown key."""
        if not key or key not in self._paths:
            return self.default
        with self._lock:
            bundle = self._loaded.get(key)
            if bundle is not None:
                self._loaded.move_to_end(key)
                return bundle
        from ..bundle import Bundle

        bundle = Bundle.load(self._paths[key])  # evicted earlier: read it again from the workspace
        with self._lock:
            self._remember(key, bundle)
        return bundle

    def _remember(self, key: str, bundle: Bundle) -> None:
        self._loaded[key] = bundle
        while len(self._loaded) > LOADED_BUNDLES:
            self._loaded.popitem(last=False)


class ServedFiles:
    """The one folder whose files the browser may download: images that lookalike wrote itself.

    A thumbnail is read from the bundle's thumbnail pack, decoded (JPEG only, thumbnail-sized), encoded again
    and written atomically under a key made of the pack's checksum, so a bundle replaced at the same path
    never shows the old bundle's images. Bundles without a thumbnail pack show captions without images.
    """

    def __init__(self, root: Path):
        import gradio as gr

        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        gr.set_static_paths([self.root])

    @staticmethod
    def _key(bundle: Bundle) -> str | None:
        digest = bundle.manifest.files.get(PACK_FILE)
        return digest[:24] if isinstance(digest, str) and digest.isalnum() else None

    def thumbnail(self, bundle: Bundle, image_id: int) -> str | None:
        """Path of the served thumbnail of image ``image_id``; None when the bundle has none for it."""
        key, pack = self._key(bundle), bundle.thumbnails
        if key is None or pack is None:
            return None
        target = self.root / key / f"{int(image_id)}.jpg"
        if not target.is_file():
            blob = pack.get(int(image_id))
            if blob is None:
                return None
            try:
                pixels = decode_thumbnail(blob, name=f"thumbnail {image_id}")
            except ImageDecodeError as error:
                logger.warning("bundle %s: %s", bundle.path, error)
                return None
            target.parent.mkdir(exist_ok=True)
            write_atomic(target, encode_thumbnail(pixels))
        return str(target)

    def gallery(self, bundle: Bundle, hits: list[Hit]) -> list[tuple[str, str]]:
        """``(thumbnail, "label  score")`` of each hit that has a thumbnail."""
        items = [(self.thumbnail(bundle, hit.id), f"{hit.label}  {hit.score:.3f}") for hit in hits]
        return [(path, caption) for path, caption in items if path is not None]

    def examples(self, bundle: Bundle, n: int) -> list[str]:
        """Served thumbnails of up to ``n`` images of different classes, held-out images preferred."""
        chosen: dict[str, int] = {}
        index = bundle.index
        for row in sorted(range(len(index)), key=lambda r: index.records[r].split == "train"):
            chosen.setdefault(index.records[row].label, int(index.ids[row]))
        paths = (self.thumbnail(bundle, image_id) for image_id in chosen.values())
        return [p for p in paths if p is not None][:n]


def new_name(prefix: str) -> str:
    """A file name lookalike chooses: ``prefix-`` and 12 random hex digits."""
    return f"{prefix}-{secrets.token_hex(6)}"


def under(path: str | os.PathLike, root: Path) -> Path:
    """``path`` resolved (links followed) if it lies inside ``root``.

    Raises
    ------
    ServeError
        It lies outside (the message does not name the server's folders).
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_relative_to(root):
        raise ServeError("that folder is outside the data folder this server may train on")
    return resolved


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def bypass_proxy_for_loopback() -> None:
    """Add the loopback addresses to ``NO_PROXY`` and ``no_proxy`` in this process's environment.

    Gradio's ``launch`` checks that the server answers on its own loopback address with ``httpx``, which sends
    requests through ``HTTP_PROXY``/``ALL_PROXY`` unless ``NO_PROXY`` names the host; behind a proxy without that
    entry the app refuses to start ("When localhost is not accessible ..."; gradio issues 7100 and 9817). Entries
    already there are kept.
    """
    for name in ("NO_PROXY", "no_proxy"):
        entries = [entry.strip() for entry in os.environ.get(name, "").split(",") if entry.strip()]
        missing = [host for host in LOOPBACK_HOSTS if host not in entries]
        if missing:
            os.environ[name] = ",".join(entries + missing)
