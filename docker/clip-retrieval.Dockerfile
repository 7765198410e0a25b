# The clip-retrieval binary for the query server (`back`) and the inference/index workers, CPU build.
#   docker build -f docker/clip-retrieval.Dockerfile -t clip-retrieval:0.1.0 .
# The build stage runs the same steps CI proves: scripts/setup.sh --build-only (apt packages, ONNX Runtime from the
# onnxruntime PyPI wheel), then cargo. Not built in this repository's CI: its machines have no container engine.
FROM node:22-bookworm AS front
WORKDIR /src/front
COPY front/ .
RUN npm ci --no-audit --no-fund && npm run build

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN bash scripts/setup.sh --build-only \
 && CARGO_TARGET_DIR=/src/target cargo build --release --locked --bin clip-retrieval

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libopenblas0-pthread libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --home-dir /home/clip clip
COPY --from=build /src/target/release/clip-retrieval /opt/clip-retrieval/bin/clip-retrieval
COPY --from=build /src/.cache/onnxruntime/ /usr/local/lib/onnxruntime/
COPY --from=build /src/models/tiny-clip /opt/clip-retrieval/models/tiny-clip
COPY --from=front /src/front/dist /opt/clip-retrieval/front/dist
ENV PATH=/opt/clip-retrieval/bin:$PATH \
    ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.1.32.0 \
    CLIP_RETRIEVAL_MODEL=/opt/clip-retrieval/models/tiny-clip
USER 10001
WORKDIR /home/clip
ENTRYPOINT ["clip-retrieval"]
CMD ["--help"]
