# rollcall in a container: a static-ish release binary on a distroless base,
# running as a non-root user, its database in the /data volume.
#
#   docker build -t rollcall .
#   docker run -d -p 127.0.0.1:8080:8080 -v rollcall-data:/data \
#     --read-only --cap-drop ALL --security-opt no-new-privileges \
#     -e ROLLCALL_JWKS_URL=https://api.workos.com/sso/jwks/client_… rollcall
#
# See compose.yaml for the same with every setting in one place.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole tree (less what .dockerignore leaves out): the manifest names
# benches and examples, and the binary embeds api/ and data/demo.ndjson.
COPY . .
RUN cargo build --release --locked --bin rollcall \
    && strip target/release/rollcall \
    && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/rollcall /usr/local/bin/rollcall
# The volume's mount point, owned by the image's non-root user (65532), so a
# fresh named volume is writable by it.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# Inside the container only: listen on every interface of its own network
# namespace (publish the port on the host's loopback or behind a proxy).
ENV ROLLCALL_LISTEN=0.0.0.0:8080 \
    ROLLCALL_DATA=/data/rollcall.redb \
    ROLLCALL_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
# No curl in a distroless image: rollcall asks its own /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/rollcall", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rollcall"]
CMD ["serve"]
