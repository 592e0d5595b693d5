"""A job's stored spec, parsed once per API process.

A job's spec never changes after it is created, and every job object the API answers (a page of
`GET /v1/jobs` holds 20) carries it as a JobSpec: validating the stored JSON again on every read was
a tenth of a listing's time. The cache is bounded (least recently used out first) and keyed by the
job's id, which is random and never reused.
"""

from collections import OrderedDict
from threading import Lock
from typing import Any

from tuning.spec import JobSpec

MAX_SPECS = 4096

_specs: OrderedDict[str, JobSpec] = OrderedDict()
_lock = Lock()  # sync routes run in a thread pool


def stored_spec(job_id: str, stored: dict[str, Any]) -> JobSpec:
    """The JobSpec of job `job_id`, whose spec column holds `stored`."""
    with _lock:
        spec = _specs.get(job_id)
        if spec is not None:
            _specs.move_to_end(job_id)
            return spec
    # Validated outside the lock: two threads may parse the same spec once each, harmlessly.
    spec = JobSpec.model_validate(stored)
    with _lock:
        _specs[job_id] = spec
        while len(_specs) > MAX_SPECS:
            _specs.popitem(last=False)
    return spec
