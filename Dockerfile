# One image, two entry points:
#   webhook (Deployment):        python -m webhook ...
#   NIC fixup sidecar (injected): python -m sidecar serve
# The sidecar needs libvirt-python, which compiles against libvirt's C client library: the build
# stage has the compiler and headers, the runtime stage only the shared library.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Unpinned Debian versions on purpose: the stable archive only ever carries the current security
# build of each package, so a pin would break the build at the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
# A build behind a TLS-intercepting proxy can hand pip its CA bundle (mounted at build time) with
# --build-arg PIP_CERT=...; an ARG is seen by this stage's RUN steps only and is never part of the image.
ARG PIP_CERT
WORKDIR /src
COPY pyproject.toml bridge_migration_contract.py ./
COPY webhook/ webhook/
COPY sidecar/ sidecar/
# pip and setuptools only install: they leave the venv before it is copied (23 MB, see
# docs/install.md "Image size").
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir '.[sidecar]' \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
# hadolint ignore=DL3008
# apt's binary caches (/var/cache/apt/*.bin, 80 MB) go too: the official image's docker-clean
# hook removes them, a plain Debian base does not.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# uid/gid 107 like KubeVirt's qemu user, so the sidecar can use the libvirt socket that
# virt-launcher's compute container creates.
RUN groupadd --system --gid 107 qemu \
 && useradd --system --uid 107 --gid 107 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin qemu
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 107:107
EXPOSE 8443
# No ENTRYPOINT: the chart's Deployment and the webhook's sidecar entry each give the full command.
CMD ["python", "-m", "webhook", "--help"]
