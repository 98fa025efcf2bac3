"""Home page and health check: what model and SAEs this server holds."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from app.web.deps import TemplatesDep, WorkspaceDep

router = APIRouter()


class SaeSummary(BaseModel):
    name: str
    hook_name: str
    architecture: str
    d_in: int
    d_sae: int
    source: str


class Health(BaseModel):
    status: str
    model: str | None
    device: str | None
    saes: list[SaeSummary]


def _health(workspace) -> Health:
    if workspace is None:
        return Health(status="ok", model=None, device=None, saes=[])
    return Health(
        status="ok",
        model=workspace.model.name,
        device=str(workspace.model.device),
        saes=[
            SaeSummary(
                name=name,
                hook_name=sae.hook_name,
                architecture=sae.architecture,
                d_in=sae.d_in,
                d_sae=sae.d_sae,
                source=workspace.sources[name],
            )
            for name, sae in workspace.saes.items()
        ],
    )


@router.get("/healthz", response_model=Health)
def healthz(workspace: WorkspaceDep) -> Health:
    return _health(workspace)


@router.get("/", response_class=HTMLResponse, name="home")
def index(request: Request, workspace: WorkspaceDep, templates: TemplatesDep):
    return templates.TemplateResponse(request, "home/index.html", {"health": _health(workspace)})
