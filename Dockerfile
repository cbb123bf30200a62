# syntax=docker/dockerfile:1.7
# The `winston` image: one binary for every role (the chart runs `winston
# controller` and `winston proxy`), on distroless with glibc, as uid 65532,
# with no shell and no package manager.
#
#   docker build -t ghcr.io/winston-dev/winston:0.1.0 .
#
# BuildKit cache mounts keep the cargo registry and the compiled
# dependencies between builds, so a source change recompiles only winston.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build
# Only what the build reads (see .dockerignore, an allow-list).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin winston \
 && install -D -m 0755 target/release/winston /out/winston

# Same Debian release as the builder, so the glibc the binary links against is there.
FROM gcr.io/distroless/cc-debian12:nonroot AS base
COPY --from=builder /out/winston /usr/local/bin/winston
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/winston"]

# The reference agent runtime (docs/runtime-contract.md): the same binary,
# started as `winston agent`, published as the `<version>-agent` tag that
# the chart gives tenant services by default.
#
#   docker build --target agent -t ghcr.io/winston-dev/winston:0.1.0-agent .
FROM base AS agent
LABEL org.opencontainers.image.title="winston-agent" \
      org.opencontainers.image.description="Winston's reference agent runtime" \
      org.opencontainers.image.source="https://github.com/winston-dev/winston" \
      org.opencontainers.image.licenses="Apache-2.0"
CMD ["agent"]

# The default target: controller, proxy and the other subcommands.
FROM base
LABEL org.opencontainers.image.title="winston" \
      org.opencontainers.image.description="Kubernetes operator that provisions and meters AI-agent tenants" \
      org.opencontainers.image.source="https://github.com/winston-dev/winston" \
      org.opencontainers.image.licenses="Apache-2.0"
CMD ["--help"]
