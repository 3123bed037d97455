# bgpspeaker with ExaBGP (pinned in pyproject.toml). Slim, non-root, no capabilities, and
# runs with a read-only root filesystem: it writes only under $TMPDIR (an emptyDir in deploy/).
# Build (the tag is the package version, the one deploy/kustomization.yaml names):
#   docker build -t bgpspeaker:0.1.0 .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY bgpspeaker ./bgpspeaker
COPY exabgp-conf ./exabgp-conf
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="bgpspeaker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /install /usr/local
# Byte code compiled at install time; nothing to write at run time (read-only root).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
RUN groupadd --system --gid 65532 bgpspeaker \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin bgpspeaker \
    && bgpspeaker --version
USER 65532:65532
ENTRYPOINT ["bgpspeaker"]
CMD ["--help"]
