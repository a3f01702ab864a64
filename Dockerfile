FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin selfheal

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/selfheal /usr/local/bin/selfheal
EXPOSE 3000
CMD ["selfheal", "web"]
