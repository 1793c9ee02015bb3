# The image of the CSI driver: `interposer csi` and the interposer processes it supervises.
# Build from the repository root:  docker build -t ghcr.io/cnfs-interposer/interposer:0.1.0 .
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc pkg-config libfuse3-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/interposer
COPY pyproject.toml README.md /src/
COPY interposer /src/interposer
RUN /opt/interposer/bin/pip install --no-cache-dir /src grpcio-tools \
 # The CSI protobuf module is generated from csi.proto here, as tasks.sh does for a checkout.
 && /opt/interposer/bin/python -m interposer.csi.protogen \
 && /opt/interposer/bin/pip uninstall -y grpcio-tools

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 fuse3 libfuse3-3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/interposer /opt/interposer
ENV PATH=/opt/interposer/bin:$PATH PYTHONUNBUFFERED=1
ENTRYPOINT ["interposer"]
CMD ["csi", "--help"]
