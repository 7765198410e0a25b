# The operator (`clip-operator`): no model, no faiss, no ONNX Runtime at run time.
#   docker build -f docker/operator.Dockerfile -t clip-operator:0.1.0 .
# Not built in this repository's CI (no container engine); the binary is the one the operator tests run.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN CARGO_TARGET_DIR=/src/target cargo build --release --locked -p clip-operator --bin clip-operator

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home clip
COPY --from=build /src/target/release/clip-operator /usr/local/bin/clip-operator
USER 10001
ENTRYPOINT ["clip-operator"]
