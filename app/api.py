"""The JSON HTTP API for programs, served beside the web app: ``POST /api/search`` and ``GET /api/health``.

``POST /api/search`` takes a multipart upload (field ``image``, optional ``k`` and ``unknown_threshold``) and
returns the same object as ``lookalike search BUNDLE IMAGE --json`` (both come from
:func:`lookalike.bundle.search_image`). ``GET /api/health`` names the served bundle. The OpenAPI document is at
``/api/openapi.json``, its interactive page at ``/api/docs``.

The routes are added to the FastAPI application that Gradio's ``launch`` creates (``app_kwargs={"routes": ...}``,
see :func:`lookalike.app.ui.serve`), so they share its address and start-up rules
(:meth:`~lookalike.app.server.ServeOptions.check`). The rules of this module:

- **the same login as the app**: with ``--auth USER:PASSWORD`` every route, the OpenAPI document included,
  needs those credentials as HTTP Basic authentication; a request without them gets 401 before its body is read;
- **read-only**: every client is answered by the bundle the server started with; nothing a client sends is kept;
- **bounded uploads**: a body over :data:`MAX_UPLOAD_BYTES` gets 413 before it is read; the upload is copied to a
  temporary file that is deleted after the search, and the pixel limit of :func:`lookalike.data.load_image` runs
  on the header before any pixel is decoded;
- **errors are JSON** ``{"error": "..."}`` with a 4xx status, and name no server path;
- **bounded concurrency**: searches run on a pool of :data:`SEARCH_WORKERS` threads, so decoding one upload
  overlaps the model and the index answering another, while further requests wait without holding a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, File, Form, Request, UploadFile
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from ..bundle.answer import search_image
from ..data import ImageDecodeError

if TYPE_CHECKING:
    from ..bundle import Bundle

logger = logging.getLogger(__name__)

#: URL prefix of the API.
PREFIX = "/api"
#: Largest accepted request body in bytes: the web app's query upload limit (``ui.MAX_UPLOAD_SIZE``, 20 MiB).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Largest ``k`` accepted: nearest images and characters returned per search.
MAX_K = 100
#: Searches run at once (decoding, the embedder, the index); more requests wait their turn.
SEARCH_WORKERS = (os.cpu_count() or 1) + 1
#: The Basic-authentication realm named in 401 answers.
REALM = "lookalike"


class HitModel(BaseModel):
    """One indexed image and its cosine similarity to the query."""

    id: int = Field(description="stable id of the image in the bundle's index")
    label: str = Field(description="its class")
    path: str = Field(description="its file, as the bundle's metadata names it")
    split: str = Field(description="train, val or test")
    score: float = Field(description="cosine similarity to the query, in [-1, 1]")


class VoteModel(BaseModel):
    """The similarity-weighted vote of the 10 nearest images."""

    predicted: str
    probabilities: dict[str, float] = Field(description="vote share of each class that received votes")


class CentroidModel(BaseModel):
    """The nearest class centroids."""

    predicted: str
    characters: list[HitModel] = Field(description="nearest centroids, each by its class's most typical image")


class SearchResponse(BaseModel):
    """The answer for one image: the object ``lookalike search --json`` prints."""

    predicted: str = Field(description="class with the highest softmax probability")
    probabilities: dict[str, float] = Field(description="softmax probability of every class, most probable first")
    unknown: bool = Field(description="true when match_score is below unknown_threshold (no close match)")
    unknown_threshold: float = Field(description="match score below which the answer is no close match")
    match_score: float = Field(
        description="open-set match score: cosine similarity to the nearest class centroid (best image for old bundles)"
    )
    characters: list[HitModel] = Field(description="nearest classes, each by its best-matching image")
    neighbors: list[HitModel] = Field(description="the k most similar images, most similar first")
    knn: VoteModel
    centroid: CentroidModel


class HealthResponse(BaseModel):
    """What the server answers with."""

    status: Literal["ok"]
    bundle: str | None = Field(description="the served bundle's directory name")
    fingerprint: str = Field(description="SHA-256 of the indexed embeddings: changes whenever the index does")
    vectors: int = Field(description="number of indexed images")
    embedding_dim: int
    index: str = Field(description="FAISS index type: flat, hnsw or ivf")
    classes: list[str]


class ErrorResponse(BaseModel):
    """A refused request."""

    error: str


ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "the upload is not an image lookalike can read (the reason is given)"),
        (401, "the server requires a login (HTTP Basic) and none, or a wrong one, was given"),
        (411, "the request has no Content-Length"),
        (413, f"the request body is larger than {MAX_UPLOAD_BYTES} bytes"),
        (422, "a field is missing or out of range"),
    )
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ())[1:])
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


#: How clients give the login (the realm is named in 401 answers).
BASIC = HTTPBasic(auto_error=False, realm=REALM, description="the login of `lookalike serve --auth USER:PASSWORD`")


class _Login:
    """The dependency that checks HTTP Basic credentials against ``auth``; None lets everyone in."""

    def __init__(self, auth: tuple[str, str] | None):
        self.expected = None if auth is None else (auth[0].encode(), auth[1].encode())

    def __call__(self, credentials: Annotated[HTTPBasicCredentials | None, Depends(BASIC)]) -> None:
        if self.expected is None:
            return
        given = (b"", b"") if credentials is None else (credentials.username.encode(), credentials.password.encode())
        user_ok = secrets.compare_digest(given[0], self.expected[0])  # both compared, in constant time
        password_ok = secrets.compare_digest(given[1], self.expected[1])
        if not (user_ok and password_ok):
            raise HTTPException(
                401,
                "this server requires a login: HTTP Basic USER:PASSWORD",
                {"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )

    async def check(self, request: Request) -> None:
        """The same check on a request whose body has not been read."""
        self(await BASIC(request))


def _route_class(login: _Login) -> type[APIRoute]:
    """APIRoute whose requests are authenticated and size-checked before the body is read, and whose errors are
    ``{"error": ...}`` (FastAPI parses a form before it solves dependencies, and answers ``{"detail": ...}``)."""

    class JSONErrorRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def checked(request: Request):
                try:
                    await login.check(request)
                    if request.method == "POST":
                        length = request.headers.get("content-length")
                        if length is None or not length.isdigit():
                            return _error(411, "send the upload with a Content-Length header")
                        if int(length) > MAX_UPLOAD_BYTES:
                            return _error(413, f"upload of {length} bytes; the limit is {MAX_UPLOAD_BYTES} bytes")
                    return await handler(request)
                except RequestValidationError as error:
                    return _error(422, _validation_message(error))
                except StarletteHTTPException as error:
                    return _error(error.status_code, str(error.detail), error.headers)

            return checked

    return JSONErrorRoute


def _package_version() -> str:
    try:
        return version("lookalike")
    except PackageNotFoundError:
        return "unknown"


def api_routes(
    bundle: Bundle, *, auth: tuple[str, str] | None = None, workers: int = SEARCH_WORKERS
) -> list[BaseRoute]:
    """The API's routes, answering with ``bundle``; give them to the app's FastAPI application.

    Parameters
    ----------
    bundle : Bundle
        A loaded bundle, the one every client is answered with.
    auth : (str, str), optional
        User and password every request must give (HTTP Basic); None serves without a login.
    workers : int
        Searches run at once.

    Returns
    -------
    list of starlette.routing.BaseRoute
        ``POST /api/search``, ``GET /api/health``, ``GET /api/openapi.json`` and ``GET /api/docs``.
    """
    login = _Login(auth)
    guarded = [Depends(login)] if auth is not None else []
    router = APIRouter(prefix=PREFIX, route_class=_route_class(login), tags=["lookalike"])
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-api")
    # Computed now, not by the first requests at once: the fingerprint hashes every vector.
    health = HealthResponse(
        status="ok",
        bundle=bundle.path.name if bundle.path else None,
        fingerprint=bundle.index.fingerprint,
        vectors=len(bundle.index),
        embedding_dim=bundle.index.dim,
        index=bundle.index.spec.type,
        classes=list(bundle.class_names),
    ).model_dump()
    bundle.centroids, bundle.open_set  # noqa: B018 - cached before requests share the bundle

    def answer(upload: UploadFile, k: int, unknown_threshold: float | None) -> dict:
        suffix = os.path.splitext(upload.filename or "")[1][:8]
        with tempfile.NamedTemporaryFile(prefix="lookalike-query-", suffix=suffix) as copy:
            shutil.copyfileobj(upload.file, copy)
            copy.flush()
            try:
                result = search_image(bundle, copy.name, k=k, unknown_threshold=unknown_threshold)
            except ImageDecodeError as error:  # the reason only: the message would name the temporary file
                raise HTTPException(400, f"cannot read the uploaded image: {error.reason}") from error
        return result.to_dict()

    @router.post(
        "/search",
        response_model=SearchResponse,
        responses=ERRORS,
        dependencies=guarded,
        summary="Find the look-alikes of an image",
    )
    async def search(
        image: Annotated[UploadFile, File(description="the query image: JPEG, PNG, BMP, GIF or WebP")],
        k: Annotated[int, Form(ge=1, le=MAX_K, description="nearest images and characters returned")] = 5,
        unknown_threshold: Annotated[
            float | None,
            Form(ge=-1.0, le=1.0, description="no-close-match threshold of the match score (default: the bundle's)"),
        ] = None,
    ) -> dict:
        """The same object as ``lookalike search BUNDLE IMAGE -k K --json``."""
        return await asyncio.get_running_loop().run_in_executor(pool, answer, image, k, unknown_threshold)

    @router.get("/health", response_model=HealthResponse, responses=ERRORS, dependencies=guarded, summary="Status")
    async def health_check() -> dict:
        """The served bundle: its name, the fingerprint of its embeddings, its size and classes."""
        return health

    schema = get_openapi(
        title="lookalike API",
        version=_package_version(),
        description="Image look-alike search over one lookalike bundle. `POST /api/search` answers as "
        "`lookalike search BUNDLE IMAGE --json` does.",
        routes=list(router.routes),
    )

    @router.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> dict:
        return schema

    @router.get("/docs", include_in_schema=False, dependencies=guarded)
    async def docs():
        return get_swagger_ui_html(openapi_url=f"{PREFIX}/openapi.json", title="lookalike API")

    return router.routes
