# bgpspeaker with ExaBGP (pinned in pyproject.toml). Slim, non-root, no capabilities.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bgpspeaker ./bgpspeaker
COPY exabgp-conf ./exabgp-conf
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
COPY --from=build /install /usr/local
RUN useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin bgpspeaker
USER 65532:65532
ENTRYPOINT ["bgpspeaker"]
CMD ["--help"]
