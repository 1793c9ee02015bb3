# The image of the CSI driver: `interposer csi` and the interposer processes it supervises.
# Build it from the repository root with `./tasks.sh image` (buildah, a base image debootstrapped
# locally, an OCI archive in dist/image.oci.tar); tools/image.py says what it passes in.
#
# The build host's settings reach the build only as secrets, mounted for one RUN and never kept in
# a layer: `aptconf` (apt configuration, e.g. a proxy), `pipconf` (pip configuration) and `cacert`
# (the CA bundle both trust). A build without them uses Debian's and PyPI's public defaults.
FROM debian:bookworm-slim AS build
RUN --mount=type=secret,id=aptconf,target=/etc/apt/apt.conf.d/99build-host \
    --mount=type=secret,id=cacert,target=/etc/ssl/certs/build-host-ca.crt \
    apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc pkg-config libfuse3-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py MANIFEST.in README.md /src/
COPY interposer /src/interposer
# The wheel is built (its build generates the CSI protobuf module in an isolated build environment
# with grpcio-tools) and installed with the driver's dependencies only: no extras, no build tools,
# and without pip and setuptools, which nothing runs once it is installed.
RUN --mount=type=secret,id=pipconf,target=/etc/pip.conf \
    --mount=type=secret,id=cacert,target=/etc/ssl/certs/build-host-ca.crt \
    python3 -m venv /opt/interposer \
 && /opt/interposer/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /dist /src \
 && /opt/interposer/bin/pip install --no-cache-dir /dist/*.whl \
 && /opt/interposer/bin/python -m pip uninstall --yes --quiet pip setuptools

FROM debian:bookworm-slim
RUN --mount=type=secret,id=aptconf,target=/etc/apt/apt.conf.d/99build-host \
    --mount=type=secret,id=cacert,target=/etc/ssl/certs/build-host-ca.crt \
    apt-get update \
 && apt-get install -y --no-install-recommends python3 fuse3 libfuse3-3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/interposer /opt/interposer
# tools/image.py adds the labels and annotations that change with every commit (version, revision,
# source) once the build is done: buildah's layer cache does not see a changed build argument.
LABEL org.opencontainers.image.title="cnfs-interposer" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/interposer/bin:$PATH PYTHONUNBUFFERED=1
# Not root by default: only mounting needs root. The CSI node plugin mounts volumes for kubelet
# (mount(2), CAP_SYS_ADMIN), so the chart runs that container as root explicitly. As this user,
# `interposer mount` mounts through the setuid fusermount3, where the container allows mounts.
USER 65532:65532
ENTRYPOINT ["interposer"]
CMD ["csi", "--help"]
