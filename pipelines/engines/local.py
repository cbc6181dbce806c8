"""The local engine of ``kgcs recommend``: the whole job in this process."""
from __future__ import annotations

import os

import polars as pl

from ..steps import RecommendJob, recommend_rows, stage_entities, staged_job, temp_sibling, write_frame


def run(m, job: RecommendJob) -> pl.DataFrame:
    """Stage the job's entities, score them in one batch and write ``job.out`` (one file) in the
    same transaction: the new entities are committed only with the output. Returns the rows."""
    tmp = temp_sibling(job.out)
    try:
        with staged_job(m.kg, job.kind):
            stage_entities(m.kg, job)
            df = recommend_rows(m, job.kind, job.ids, k=job.k, audience=job.audience, onboarding=job.onboarding,
                                explain=job.explain)
            write_frame(df, tmp, job.csv)
        os.replace(tmp, job.out)  # the new entities are committed: now the output they go with
    finally:
        tmp.unlink(missing_ok=True)
    return df
