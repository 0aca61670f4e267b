"""``POST /api/batches/{id}/reidentify``: the audited way back to the originals, by API key.

Its own scope (``reidentify``), a reason (recorded only as a keyed digest), and
the same library call and audit entry as ``telerad reidentify``; the actor is
the API key's ID.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool

from pipeline.exceptions import AuditError, KeyError_, MappingError, TeleradError
from pipeline.gateway.auth import Principal, require_scope
from pipeline.gateway.context import Gateway, gateway
from pipeline.gateway.models import Problem, ReidentifiedStudy, ReidentifyRequest
from pipeline.gateway.routers.batches import BATCH_ID, ERRORS

router = APIRouter(tags=["reidentify"])


@router.post(
    "/api/batches/{batch_id}/reidentify", response_model=list[ReidentifiedStudy],
    summary="Original identifiers behind a batch's cloud studies (audited)",
    description="Needs the 'reidentify' scope and a reason of at least 8 characters. Every call, granted "
    "or refused, is written to the audit log before anything is returned.",
    responses={404: {"model": Problem}, 422: {"model": Problem}, 500: {"model": Problem}, **ERRORS},
)
async def reidentify(
    body: ReidentifyRequest,
    batch_id: str = BATCH_ID,
    principal: Principal = Depends(require_scope("reidentify")),
    gw: Gateway = Depends(gateway),
) -> list[ReidentifiedStudy]:
    from pipeline.mapping.reidentify import ReidentificationRefused
    from pipeline.mapping.reidentify import reidentify as lookup

    try:
        studies = await run_in_threadpool(
            lambda: lookup(gw.settings, batch_id, body.cloud_study_id, reason=body.reason,
                           actor=principal.actor, reason_code=body.reason_code))
    except ReidentificationRefused as exc:
        raise HTTPException(422, str(exc)) from None
    except AuditError:
        raise HTTPException(500, "the request could not be audited, so nothing was returned") from None
    except KeyError_:
        raise HTTPException(500, "the mapping exists but this site's key cannot open it; see `telerad keys status`") from None
    except MappingError:
        raise HTTPException(404, "no mapping for that batch (or study) on this site") from None
    except TeleradError as exc:
        raise HTTPException(500, f"re-identification failed ({type(exc).__name__})") from None
    return [ReidentifiedStudy(**s.as_dict()) for s in studies]
