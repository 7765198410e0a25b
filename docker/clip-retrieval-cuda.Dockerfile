# The clip-retrieval binary with the CUDA build of ONNX Runtime (onnxruntime-gpu wheel), for GPU inference workers
# (`inference --device cuda`; the operator adds it when an EmbeddingJob asks for GPUs).
#   docker build -f docker/clip-retrieval-cuda.Dockerfile -t clip-retrieval:0.1.0-cuda .
# Not built in this repository's CI (no container engine, no GPU); the CPU image's steps are the ones CI proves.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN ORT_PACKAGE=onnxruntime-gpu bash scripts/setup.sh --build-only \
 && CARGO_TARGET_DIR=/src/target cargo build --release --locked --bin clip-retrieval

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libopenblas0-pthread libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --home-dir /home/clip clip
COPY --from=build /src/target/release/clip-retrieval /opt/clip-retrieval/bin/clip-retrieval
COPY --from=build /src/.cache/onnxruntime/ /usr/local/lib/onnxruntime/
COPY --from=build /src/models/tiny-clip /opt/clip-retrieval/models/tiny-clip
ENV PATH=/opt/clip-retrieval/bin:$PATH \
    ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.1.32.0 \
    CLIP_RETRIEVAL_MODEL=/opt/clip-retrieval/models/tiny-clip
USER 10001
WORKDIR /home/clip
ENTRYPOINT ["clip-retrieval"]
CMD ["--help"]
