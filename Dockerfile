# One image for the joblet worker, the rnx CLI and Flower (docker-compose.yml builds it).
# Debian packages and PyPI only. The worker still needs the host's kernel features
# (cgroup v2 or hybrid, nf_tables, veth, bridge): see docker-compose.yml and docs/DEPLOY.md.
# Target "redis": Debian's redis-server, so every image here builds from Debian packages.
FROM debian:bookworm-slim AS redis
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
WORKDIR /data
CMD ["redis-server"]

# Target "joblet" (the default, last stage): worker, rnx and flower.
FROM python:3.11-slim-bookworm AS joblet

# What the worker runs besides Python: bwrap (the job sandbox), nft, ip/tc, nsenter,
# mkfs.ext4 (sized volumes), libseccomp (the job's seccomp filter), ping for jobs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      bubblewrap nftables iproute2 util-linux e2fsprogs libseccomp2 iputils-ping procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY joblet ./joblet
# flower: the Celery monitor the compose file runs from this same image
RUN pip install --no-cache-dir ".[worker]" "flower>=2" && rm -rf /src

WORKDIR /
# rnx by default; the compose file's worker and flower services set their own command.
ENTRYPOINT []
CMD ["rnx", "--help"]
