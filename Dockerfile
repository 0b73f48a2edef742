# Two images from one recipe, one per entry point:
#   webhook (Deployment), the default target:  python -m webhook ...
#   NIC fixup sidecar (injected into every virt-launcher pod), --target sidecar: python -m sidecar serve
# The sidecar image is pulled onto every node that runs a VM, so it carries only what the sidecar
# imports: libvirt's client library and the `sidecar` extra, none of the webhook's stack (FastAPI,
# uvicorn, cryptography, ...). The webhook image has no libvirt at all. Sizes: docs/install.md.
# libvirt-python compiles against libvirt's C client library: the build stage has the compiler and
# headers, the sidecar stage only the shared library.
# The base, pinned by digest (docs/install.md, "The base, by digest": where this one comes from, how
# to check and move it). scripts/build-image.sh overrides it with a locally built stand-in.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

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
# One venv per image, each installed from its lock (requirements/*.txt, written by scripts/lock.sh
# from pyproject.toml): every package pinned and checked against its sha256, and nothing the lock
# does not name. build.txt is pip and setuptools, the build backend of the project and of
# libvirt-python, so their builds use it (--no-build-isolation) rather than an unpinned download.
# The dependencies come before the source: their layers are rebuilt only when a lock changes.
COPY requirements/ requirements/
# The webhook's: [project] dependencies.
RUN python -m venv /opt/venv-webhook \
 && /opt/venv-webhook/bin/pip install --no-cache-dir --require-hashes -r requirements/build.txt \
 && /opt/venv-webhook/bin/pip install --no-cache-dir --require-hashes -r requirements/webhook.txt
# The sidecar's: the `sidecar` extra only, none of the webhook's dependencies.
RUN python -m venv /opt/venv-sidecar \
 && /opt/venv-sidecar/bin/pip install --no-cache-dir --require-hashes -r requirements/build.txt \
 && /opt/venv-sidecar/bin/pip install --no-cache-dir --require-hashes --no-build-isolation -r requirements/sidecar.txt
COPY pyproject.toml bridge_migration_contract.py ./
COPY webhook/ webhook/
COPY sidecar/ sidecar/
# For `python -m kubectl_bridge_migration.cleanup`, the chart's pre-delete hook Job (cleanup.onUninstall),
# which runs in the webhook image: it needs only httpx and PyYAML, the webhook's own dependencies. The
# plugin's other modules (the `kubernetes` client) are not usable in either image.
COPY kubectl_bridge_migration/ kubectl_bridge_migration/
# Then the project into each, without dependencies (`pip check`: the webhook's lock has them all).
# pip and setuptools only install: they leave each venv before it is copied.
RUN /opt/venv-webhook/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
 && /opt/venv-webhook/bin/pip check \
 && /opt/venv-webhook/bin/pip uninstall --yes --quiet pip setuptools
RUN /opt/venv-sidecar/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
 && /opt/venv-sidecar/bin/pip uninstall --yes --quiet pip setuptools

# What both images share: uid/gid 107 like KubeVirt's qemu user, so the sidecar can use the
# libvirt socket that virt-launcher's compute container creates.
FROM ${PYTHON_IMAGE} AS user
# OCI labels: these here, title and description per image, version and revision last in each
# (they change at every commit, so no layer after them is rebuilt for that).
ARG SOURCE=https://github.com/kubevirt-bridge-migration/bridge-migration
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 107 qemu \
 && useradd --system --uid 107 --gid 107 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin qemu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

FROM user AS sidecar
LABEL org.opencontainers.image.title="bridge-migration-sidecar" \
      org.opencontainers.image.description="bridge-migration's NIC fixer: repairs a bridge/macvtap guest NIC after a KubeVirt live migration (python -m sidecar)"
# apt's binary caches (/var/cache/apt/*.bin, 80 MB) go too: the official image's docker-clean
# hook removes them, a plain Debian base does not.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY --from=build /opt/venv-sidecar /opt/venv
USER 107:107
# The webhook's hookSidecars entry gives the full command; this is the same.
CMD ["python", "-m", "sidecar", "serve"]
# scripts/build-image.sh passes the package version and the git commit.
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

FROM user AS webhook
LABEL org.opencontainers.image.title="bridge-migration" \
      org.opencontainers.image.description="bridge-migration's admission webhook: makes KubeVirt VMIs with bridge/macvtap NICs live-migratable (python -m webhook)"
COPY --from=build /opt/venv-webhook /opt/venv
USER 107:107
EXPOSE 8443
# No ENTRYPOINT: the chart's Deployment gives the full command.
CMD ["python", "-m", "webhook", "--help"]
# scripts/build-image.sh passes the package version and the git commit.
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
