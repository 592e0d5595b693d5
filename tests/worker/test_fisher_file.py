"""An ewc job's source-task file comes from the file store like its training file."""

from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from tests.worker.jobs import add_file, data_path, job_row, sentiment_lines
from tests.worker.jobs import add_job as add_lora_job
from tests.worker.test_job_runner import assert_nothing_published, events_of
from worker.job_runner import run_job


def add_ewc_job(sessions: sessionmaker[Session], settings: Settings, fisher_file: str) -> str:
    # BitFit trains pretrained biases directly: weights EWC can hold back.
    return add_lora_job(
        sessions,
        settings,
        spec_changes={
            "method": {"type": "bitfit"},
            "regularizers": {"ewc": {"weight": 10.0, "fisher_file": fisher_file, "fisher_examples": 8}},
        },
    )


def test_an_ewc_job_estimates_its_fisher_on_the_stored_file(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    source = add_file(sessions, settings, sentiment_lines(20, seed=5), purpose="fine-tune")
    job_id = add_ewc_job(sessions, settings, source)

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "succeeded"

    costs = [event.data for event in events_of(sessions, job_id, "message") if "fisher_seconds" in event.data]
    assert len(costs) == 1 and costs[0]["fisher_examples"] == 8 and costs[0]["fisher_parameters"] > 0
    metrics = events_of(sessions, job_id, "metrics")
    assert metrics and all("ewc" in event.data["penalties"] for event in metrics)
    assert metrics[-1].data["penalties"]["ewc"] > 0


def test_an_ewc_job_whose_source_file_is_gone_fails_naming_it(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    source = add_file(sessions, settings, sentiment_lines(20, seed=5), purpose="fine-tune")
    job_id = add_ewc_job(sessions, settings, source)
    data_path(settings, source).unlink()

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "failed"

    job = job_row(sessions, job_id)
    assert (job.error_code, job.error_param) == ("file_not_found", "regularizers.ewc.fisher_file")
    assert source in (job.error_message or "")
    assert_nothing_published(sessions, settings, job_id)
