"""A small client of the Datamint platform's REST API (projects, prediction logging).

It follows the contract of the public Datamint SDK (``datamint.api``):

- every request carries the key as ``apikey: <key>`` and ``Authorization: Bearer <key>``;
- ``GET  {api_url}/projects?includeArchived=true`` -> ``{"projects": [{"id", "name", ...}]}``
  (a bare JSON list is accepted too);
- ``GET  {api_url}/projects/{id}`` -> the project object, 404 when there is none;
- ``POST {api_url}/annotations`` with ``{"resource_id", "model_name", "project_id",
  "annotations": [...]}`` logs a model's predictions (``log_predictions=True``);
- ``GET  {api_url}/resources?project={"items": [<name>], "filterType": "intersection"}``
  ``&offset=&limit=`` -> ``{"resources": [{"id", "filename", "mimetype", "modality", ...}]}``,
  one page; a page shorter than ``limit`` is the last;
- ``GET  {api_url}/resources/{id}/file`` -> the resource's file (bytes);
- ``POST {api_url}/annotations/search?offset=&limit=`` with ``{"resource_ids": [...],
  "annotation_type": "segmentation"}`` -> ``{"annotations": [{"id", "resource_id",
  "identifier", "type", "frame_index", ...}]}``, paged as above;
- ``GET  {api_url}/annotations/{resource id}/annotations/{annotation id}/file`` -> the
  annotation's mask file (a NIfTI volume, or a PNG for one frame).

Redirects are never followed (a redirect could carry the key to another host), the key is
sent only to the configured API URL, and there is no retry: a wrong key or an unreachable
platform is reported at once, naming the setting to fix.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from datamint_core.errors import PlatformAuthError, PlatformRequestError, PlatformUnreachableError
from datamint_core.platform.config import PlatformSettings, load_settings, origin

_logger = logging.getLogger(__name__)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise PlatformRequestError(
            f"The Datamint platform redirected {req.full_url} to {newurl} (HTTP {code}); the "
            "API key is not sent on. Set DATAMINT_API_URL to the address it redirects to."
        )


_OPENER = urllib.request.build_opener(_RefuseRedirects)
#: Items asked for per page of a listing (resources, annotations).
_PAGE_LIMIT = 500


class PlatformClient:
    """Calls the platform's API with the configured key.

    Args:
        settings: the resolved settings; by default :func:`load_settings`.

    Raises:
        PlatformConfigError: no API key, or an unsafe URL.
    """

    def __init__(self, settings: PlatformSettings | None = None) -> None:
        self.settings = (settings or load_settings()).check()

    def request(self, method: str, path: str, payload: Any = None,
                query: dict[str, str] | None = None) -> Any:
        """Send one request to ``{api_url}/{path}``; return the decoded JSON (``None`` on 404).

        Raises:
            PlatformAuthError: HTTP 401/403, naming ``DATAMINT_API_KEY``.
            PlatformUnreachableError: no answer within the timeout, naming ``DATAMINT_API_URL``.
            PlatformRequestError: any other error status.
        """
        body = self._send(method, path, payload, query, "application/json")
        return json.loads(body) if body else None

    def download(self, path: str) -> bytes | None:
        """``GET {api_url}/{path}`` as bytes (a resource's or an annotation's file); ``None``
        on 404. Raises as :meth:`request`."""
        return self._send("GET", path, None, None, "application/octet-stream")

    def _send(self, method: str, path: str, payload: Any, query: dict[str, str] | None,
              accept: str) -> bytes | None:
        url = f"{self.settings.api_url}/{path.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if origin(url) not in self.settings.key_origins():  # pragma: no cover - by construction
            raise PlatformRequestError(f"refusing to send the API key to {url}")
        key = self.settings.api_key or ""
        headers = {"apikey": key, "Authorization": f"Bearer {key}", "Accept": accept}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=self.settings.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            if error.code in (401, 403):
                raise PlatformAuthError(
                    f"The Datamint platform at {self.settings.api_url} rejected the API key "
                    f"(HTTP {error.code}). Check DATAMINT_API_KEY (or `datamint config "
                    "--api-key -`)."
                ) from None
            raise PlatformRequestError(
                f"The Datamint platform answered {method} {url} with HTTP {error.code} "
                f"{error.reason}."
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PlatformUnreachableError(
                f"Cannot reach the Datamint platform at {self.settings.api_url} ({reason}) "
                f"within {self.settings.timeout_s:g} s. Check DATAMINT_API_URL and the network "
                "(DATAMINT_PLATFORM_TIMEOUT sets the wait)."
            ) from None
        return body

    def list_projects(self) -> list[dict[str, Any]]:
        """Return every project the key can see (archived ones included)."""
        answer = self.request("GET", "projects", query={"includeArchived": "true"}) or []
        projects = answer.get("projects", []) if isinstance(answer, dict) else answer
        return [p for p in projects if isinstance(p, dict) and "id" in p]

    def get_project(self, project_id: str) -> dict[str, Any] | None:
        """Return the project with this id, or ``None``."""
        if not project_id or "/" in project_id:
            return None
        answer = self.request("GET", f"projects/{urllib.parse.quote(project_id)}")
        return answer if isinstance(answer, dict) and "id" in answer else None

    def log_predictions(self, resource_id: str | None, annotations: list[dict[str, Any]],
                        model_name: str | None, project_id: str | None) -> None:
        """Send one resource's predicted annotations to the platform."""
        self.request("POST", "annotations", payload={
            "resource_id": resource_id,
            "model_name": model_name,
            "project_id": project_id,
            "annotations": annotations,
        })

    def list_project_resources(self, project_name: str) -> list[dict[str, Any]]:
        """Every resource of the project (all pages), as the platform describes them."""
        project_filter = json.dumps({"items": [project_name], "filterType": "intersection"})
        return self._pages("GET", "resources", "resources", {"project": project_filter})

    def search_annotations(self, resource_ids: list[str],
                           annotation_type: str = "segmentation") -> list[dict[str, Any]]:
        """Every annotation of ``annotation_type`` on these resources (all pages)."""
        if not resource_ids:
            return []
        payload = {"resource_ids": resource_ids, "annotation_type": annotation_type}
        return self._pages("POST", "annotations/search", "annotations", {}, payload)

    def _pages(self, method: str, path: str, field: str, query: dict[str, str],
               payload: Any = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page_query = {**query, "offset": str(len(found)), "limit": str(_PAGE_LIMIT)}
            answer = self.request(method, path, payload=payload, query=page_query) or []
            items = answer.get(field, []) if isinstance(answer, dict) else answer
            if not isinstance(items, list):
                raise PlatformRequestError(
                    f"The Datamint platform answered {method} {path} with {type(items).__name__}"
                    f" where a list of {field} was expected."
                )
            found += [item for item in items if isinstance(item, dict) and "id" in item]
            if len(items) < _PAGE_LIMIT:
                return found
