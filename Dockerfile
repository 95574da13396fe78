# chainwatch image: build with the pinned toolchain, run on a slim Debian.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin chainwatch

FROM debian:bookworm-slim
# Root certificates for webhook sinks on https (ticketing, paging and chat APIs).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home /var/lib/chainwatch chainwatch && mkdir -p /var/lib/chainwatch && chown chainwatch /var/lib/chainwatch
COPY --from=build /src/target/release/chainwatch /usr/local/bin/chainwatch
COPY playbooks /etc/chainwatch/playbooks
COPY deploy/chainwatch.toml /etc/chainwatch/chainwatch.toml
EXPOSE 9464
USER chainwatch
ENTRYPOINT ["chainwatch"]
CMD ["run", "--config", "/etc/chainwatch/chainwatch.toml"]
