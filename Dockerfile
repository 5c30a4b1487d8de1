# The Nudge image: `nudge api`, `nudge worker` and `nudge migrate` (see docker-compose.yml).
FROM python:3.11.18-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# DejaVu Sans: PDF transcripts print every script customers write, not only Latin-1.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 nudge \
 && useradd --system --uid 10001 --gid nudge --home-dir /home/nudge --create-home \
      --shell /usr/sbin/nologin nudge

WORKDIR /src
COPY pyproject.toml README.md ./
COPY nudge ./nudge
# Bytecode compiled here, as root: the worker's workflow sandbox imports workflow modules
# again for every run, and without it each import would compile their source.
RUN pip install --no-cache-dir . \
 && cd / && python -m compileall -q "$(python -c 'import nudge, os; print(os.path.dirname(nudge.__file__))')" \
 && rm -rf /src/build /src/*.egg-info

# A writable working directory for the unprivileged user (nothing is kept here in
# production: state lives in PostgreSQL and Temporal).
WORKDIR /home/nudge
USER nudge:nudge

EXPOSE 8000
ENTRYPOINT ["nudge"]
CMD ["--help"]
