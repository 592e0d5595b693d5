"""The `deltatune` client commands: files, jobs and models over the REST API, with live progress."""
