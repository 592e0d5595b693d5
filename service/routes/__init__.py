"""One router per resource: files, jobs, models, health."""
