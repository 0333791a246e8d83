# The peer of `imgbuild build api` in bench/bench.py (section api): the multi-stage shape of the
# production incident, on the same local Debian python base as fixtures/job-agent/imgbuild.toml.
# Built with `buildah bud --layers --isolation chroot` (overlay storage) from a copy of the
# fixture project; the bench passes:
#   BASE         the base image, imported into buildah's storage from the OCI layout imgbuild uses
#   INDEX_URL    the host's package index configuration (PIP_INDEX_URL / UV_DEFAULT_INDEX / pip.conf);
#                empty means the tools' default index
#   CA_FILE      where the host's CA bundle is bind-mounted (the index may be behind a TLS proxy)
# and bind-mounts warm pip and uv caches (the "warm wheel cache" of a cold build), the host CA
# bundle and pip's wheel (Debian's minbase python3 has no pip; `python3 pip.whl/pip` runs it).
ARG BASE
FROM ${BASE} AS builder
ARG INDEX_URL=
ARG CA_FILE=/etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=${CA_FILE} SSL_CERT_FILE=${CA_FILE} PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore UV_LINK_MODE=copy
# uv goes into its own prefix so that it does not end up in the runtime stage's COPY.
RUN python3 /opt/pip.whl/pip install --quiet --target /opt/uv ${INDEX_URL:+--index-url "$INDEX_URL"} uv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv export --quiet --frozen --no-emit-project -o /tmp/requirements.txt \
 && /opt/uv/bin/uv pip install --quiet --system --break-system-packages --python /usr/bin/python3 \
      ${INDEX_URL:+--default-index "$INDEX_URL"} -r /tmp/requirements.txt

FROM ${BASE}
COPY --from=builder /usr/local/lib/python3.11/dist-packages /usr/local/lib/python3.11/dist-packages
COPY --from=builder /usr/local/bin /usr/local/bin
WORKDIR /app
COPY src /app/src
COPY alembic /app/alembic
COPY alembic.ini /app/alembic.ini
ENV PYTHONUNBUFFERED=1
USER 1000:1000
EXPOSE 8000/tcp
CMD ["uvicorn", "src.main:app", "--host", "0.0.0.0", "--port", "8000"]
