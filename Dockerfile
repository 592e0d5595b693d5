# deltatune image: one image for the API, the workers and the one-shot migration.
# Build: docker build --target runtime -t deltatune .   (docker compose does this for you)

FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DELTATUNE_DATA_DIR=/data

WORKDIR /app

# torch on its own layer, before the code, so code changes do not re-download it. From the default
# index on linux x86_64 this is the CUDA build, which the GPU workers need.
RUN pip install torch==2.13.0

COPY pyproject.toml README.md alembic.ini ./
COPY tuning ./tuning
COPY core ./core
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
# Editable, so alembic.ini and migrations/ stay beside the packages where `deltatune migrate` finds them.
RUN pip install -e .

# A non-root user owns /data; a named volume mounted there starts with this ownership.
RUN useradd --create-home --uid 1000 deltatune \
    && mkdir -p /data \
    && chown deltatune:deltatune /data
USER deltatune
VOLUME ["/data"]

EXPOSE 8000
ENTRYPOINT ["deltatune"]
CMD ["api"]
