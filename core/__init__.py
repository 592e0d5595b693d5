"""The ground the API and the workers share: settings, the database, its tables and schema version,
and dispatch (the Celery app both sides build, the task names, enqueueing).

`core` imports neither `service` nor `worker` (tests/test_layering.py keeps it so): the API sends
work by task name and the workers consume it, each building what it needs from here.
"""
