# taskledger service image: the `taskledger` command (service, CLI, HTTP API).
#
#   docker build -t taskledger .
#   docker run --rm taskledger --help
#
# All dependencies ship as wheels for python:3.11-slim (amd64 and arm64): no compiler.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the distribution is built from (see .dockerignore for the rest).
COPY pyproject.toml README.md alembic.ini ./
COPY contracts/ contracts/
COPY consumer/ consumer/
COPY migrations/ migrations/

RUN pip install . \
    && useradd --system --uid 10001 --user-group --no-create-home \
       --shell /usr/sbin/nologin taskledger

# The code is owned by root and only readable by the service user.
USER taskledger

# 8080: `taskledger api`; 9100: Prometheus metrics of `taskledger run --metrics-port 9100`.
EXPOSE 8080 9100

ENTRYPOINT ["taskledger"]
CMD ["--help"]
