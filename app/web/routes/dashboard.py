"""/dashboard: the team's view of every SAE's labels, and of what people do with them."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.db import dashboard
from app.db.queries import list_saes
from app.web.charts import score_chart
from app.web.deps import SessionDep, TemplatesDep

router = APIRouter()


@router.get("/dashboard", response_class=HTMLResponse, name="dashboard")
def dashboard_page(request: Request, session: SessionDep, templates: TemplatesDep):
    saes = [dashboard.sae_health(session, sae) for sae in list_saes(session)]
    context = {
        "saes": [(h, score_chart(h.sae.summary or {})) for h in saes],
        "low_score": dashboard.LOW_SCORE,
        "changes": dashboard.recent_label_changes(session),
        "steered": dashboard.most_steered(session),
        "lists": dashboard.list_activity(session),
    }
    return templates.TemplateResponse(request, "dashboard/index.html", context)
