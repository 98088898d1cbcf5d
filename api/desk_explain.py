"""The review desk's heat map: where the active model looked at an item's photo.

`GET /desk/items/{id}/heat.png` is the Grad-CAM picture `vitrine explain` draws, cut down
for the item page (`vitrine.ops.explain.heat_picture`: the photo and the photo under the map,
the label the map is for). It is made through the API's one loaded model (the search
embedder's) on the first request for the image's bytes and the active model, about a
second, and sent from `<data dir>/desk-heat/` afterwards (`vitrine.ops.heat_maps`).

Access is the `photo` route's: a desk session, the caller's own rows only (a merchant sees
a 404 for another merchant's image), and one fixed 404 when the photo cannot be read or
decoded under the workers' rules, whatever the reason. The URL stays the same when the
photo's bytes or the active model change, so browsers keep the picture for an hour and
then revalidate it: its ETag names the bytes and the model, and an unchanged picture
costs a 304 and one database query.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from vitrine.api.auth import context, scoped
from vitrine.api.desk_session import Desk
from vitrine.api.schemas import MAX_ID
from vitrine.db import repository
from vitrine.ops.heat_maps import heat_map, heat_map_path
from vitrine.ops.photo_search import PhotoEmbedder
from vitrine.ops.stored_photos import PhotoUnavailable

router = APIRouter(prefix="/desk", include_in_schema=False)
MAX_AGE = 3600
ImageId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


@router.get("/items/{image_id}/heat.png")
def heat(image_id: ImageId, request: Request, desk: Desk) -> Response:
    """The cached heat map of an image the caller may see; private caching, revalidated."""
    ctx = context(request)
    with scoped(ctx, desk.client) as conn:
        source = repository.photo_source(conn, image_id=image_id)
    if source is None:
        raise HTTPException(404, f"no image {image_id}")
    uri, sha256 = source
    embedder: PhotoEmbedder = request.app.state.embedder
    active = embedder.model_row()
    path = heat_map_path(ctx, image_id=image_id, sha256=sha256, model_key=active.key)
    headers = {"Cache-Control": f"private, max-age={MAX_AGE}", "ETag": f'"{path.stem}"'}
    if _matches(request.headers.get("if-none-match", ""), headers["ETag"]) and path.exists():
        return Response(status_code=304, headers=headers)
    try:
        made = heat_map(ctx, embedder, image_id=image_id, uri=uri, sha256=sha256, active=active)
    except PhotoUnavailable:
        raise HTTPException(404, f"the photo of image {image_id} is not available") from None
    return FileResponse(made, media_type="image/png", headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether the browser's If-None-Match names `etag` (weak or strong, or `*`)."""
    sent = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in sent or "*" in sent
