# Two images from one recipe, one per entry point:
#   webhook (Deployment), the default target:  python -m webhook ...
#   NIC fixup sidecar (injected into every virt-launcher pod), --target sidecar: python -m sidecar serve
# The sidecar image is pulled onto every node that runs a VM, so it carries only what the sidecar
# imports: libvirt's client library and the `sidecar` extra, none of the webhook's stack (FastAPI,
# uvicorn, cryptography, ...). The webhook image has no libvirt at all. Sizes: docs/install.md.
# libvirt-python compiles against libvirt's C client library: the build stage has the compiler and
# headers, the sidecar stage only the shared library.
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
# One venv per image. pip and setuptools only install: they leave each venv before it is copied.
# The webhook's: the project with its dependencies.
RUN python -m venv /opt/venv-webhook \
 && /opt/venv-webhook/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv-webhook/bin/pip install --no-cache-dir . \
 && /opt/venv-webhook/bin/pip uninstall --yes --quiet pip setuptools
# The sidecar's: the project without its (webhook) dependencies, plus the `sidecar` extra as
# pyproject.toml lists it.
RUN python -m venv /opt/venv-sidecar \
 && /opt/venv-sidecar/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv-sidecar/bin/pip install --no-cache-dir --no-deps . \
 && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["sidecar"]))' > /tmp/sidecar-requirements.txt \
 && /opt/venv-sidecar/bin/pip install --no-cache-dir -r /tmp/sidecar-requirements.txt \
 && /opt/venv-sidecar/bin/pip uninstall --yes --quiet pip setuptools

# What both images share: uid/gid 107 like KubeVirt's qemu user, so the sidecar can use the
# libvirt socket that virt-launcher's compute container creates.
FROM ${PYTHON_IMAGE} AS user
RUN groupadd --system --gid 107 qemu \
 && useradd --system --uid 107 --gid 107 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin qemu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

FROM user AS sidecar
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

FROM user AS webhook
COPY --from=build /opt/venv-webhook /opt/venv
USER 107:107
EXPOSE 8443
# No ENTRYPOINT: the chart's Deployment gives the full command.
CMD ["python", "-m", "webhook", "--help"]
