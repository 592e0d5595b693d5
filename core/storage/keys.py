"""Where each stored thing lives: keys that mirror the data folder's layout, whichever engine holds them.

A key is a relative, '/'-separated path: `files/<file id>`, `artifacts/<job>/attempt-<n>/<name>`,
`checkpoints/<job>/<checkpoint id>/<name>`, `resume/<job>/step-<k>/<name>`. The local engine puts it
under the data folder, the S3 engine under its prefix in the bucket.
"""

FILES = "files"
ARTIFACTS = "artifacts"
CHECKPOINTS = "checkpoints"
RESUME = "resume"


def join(prefix: str, name: str) -> str:
    """`prefix/name` for a `name` read from a row; ValueError for one that would climb out of `prefix`
    (a second guard: names are looked up in the database before they come here)."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"stored name {name!r} escapes its folder {prefix!r}")
    return f"{prefix}/{name}"


def file_key(file_id: str) -> str:
    return join(FILES, file_id)


def job_artifacts(job_id: str) -> str:
    """The folder of a job's artifact folders, one per attempt that published."""
    return join(ARTIFACTS, job_id)


def artifact_prefix(job_id: str, attempt: int) -> str:
    """Where the attempt that published a job's artifact put it, one folder per attempt (attempt 0:
    the layout from before leases, `artifacts/<job>/` itself; a succeeded job's `attempt` is the one
    that published)."""
    job = job_artifacts(job_id)
    return job if attempt == 0 else f"{job}/attempt-{attempt}"


def job_checkpoints(job_id: str) -> str:
    return join(CHECKPOINTS, job_id)


def checkpoint_prefix(job_id: str, checkpoint_id: str) -> str:
    return join(job_checkpoints(job_id), checkpoint_id)


def resume_prefix(job_id: str) -> str:
    """A job's resume points, `step-<k>/` each, kept across its attempts."""
    return join(RESUME, job_id)
