# syntax=docker/dockerfile:1
#
# The koncli image: a static koncli on distroless, as a non-root user, built
# with Docker for machines that can pull golang and distroless:
#
#   make image-docker                           # builds konlease/koncli:dev
#   docker run --rm konlease/koncli:dev version
#
# `make image` builds the same image offline, without Docker: a static
# koncli on an empty base with the CA certificates and nonroot user that
# distroless has (tools/mkimage), as bin/images/koncli.tar. BASE_IMAGE
# picks another base with those (a mirror of distroless, say).
#
# Applications add koncli to their own image by copying it from this one
# (see examples/db-migration/job.yaml):
#
#   COPY --from=konlease/koncli:dev /usr/local/bin/koncli /usr/local/bin/koncli
#
# It lives at the repository root, not under examples/, because it is the
# release image and its build context is the whole module.

ARG GO_VERSION=1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

# Build on the builder's own platform and cross-compile for the target
# (docker buildx build --platform linux/arm64): Go needs no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
# The release koncli reports (koncli version); make image passes
# git describe. Empty: koncli falls back to "devel".
ARG VERSION=
WORKDIR /src
# Modules first, so that this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# CGO_ENABLED=0: a static binary, which distroless/static (no libc) needs.
# -trimpath: no paths of the build machine in the binary.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags "-s -w -X github.com/konlease/konlease/cmd/koncli/app.version=${VERSION}" \
      -o /out/koncli ./cmd/koncli

# static: CA certificates, tzdata and /etc/passwd, no shell; nonroot: the
# user 65532.
FROM ${BASE_IMAGE}
COPY --from=build /out/koncli /usr/local/bin/koncli
# Numeric, so that a pod with runAsNonRoot: true can verify it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/koncli"]
