"""Home page and health check: what model and SAEs this server holds."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from app.db.queries import list_saes
from app.web.deps import SessionDep, TemplatesDep, WorkspaceDep

router = APIRouter()


class SaeSummary(BaseModel):
    name: str
    hook_name: str
    hook_name_out: str | None  # where a transcoder writes; None for an SAE
    architecture: str
    d_in: int
    d_sae: int
    source: str


class Health(BaseModel):
    status: str
    model: str | None
    device: str | None
    saes: list[SaeSummary]
    harvested: list[str]  # model/sae pairs the database holds dashboards for


def _health(workspace, session) -> Health:
    harvested = [f"{s.model.name}/{s.name}" for s in list_saes(session)]
    if workspace is None:
        return Health(status="ok", model=None, device=None, saes=[], harvested=harvested)
    return Health(
        status="ok",
        harvested=harvested,
        model=workspace.model.name,
        device=str(workspace.model.device),
        saes=[
            SaeSummary(
                name=name,
                hook_name=sae.hook_name,
                hook_name_out=sae.hook_name_out if sae.is_transcoder else None,
                architecture=sae.architecture,
                d_in=sae.d_in,
                d_sae=sae.d_sae,
                source=workspace.sources[name],
            )
            for name, sae in workspace.saes.items()
        ],
    )


@router.get("/healthz", response_model=Health)
def healthz(workspace: WorkspaceDep, session: SessionDep) -> Health:
    return _health(workspace, session)


@router.get("/", response_class=HTMLResponse, name="home")
def index(request: Request, workspace: WorkspaceDep, session: SessionDep, templates: TemplatesDep):
    health = _health(workspace, session)
    saes = list_saes(session)
    context = {
        "health": health,
        "saes": saes,
        "resident": set(health.harvested) & {f"{health.model}/{s.name}" for s in health.saes},
    }
    return templates.TemplateResponse(request, "home/index.html", context)


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False, name="api_docs")
def api_docs(request: Request, templates: TemplatesDep):
    """Swagger UI over /openapi.json, from the npm copy of swagger-ui-dist (works offline)."""
    openapi = request.scope.get("root_path", "") + request.app.openapi_url
    return templates.TemplateResponse(request, "home/docs.html", {"openapi": openapi})
