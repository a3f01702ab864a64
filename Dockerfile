# selfheal's images, built from a Debian bookworm base made locally: no registry is needed.
# `scripts/compose-demo.sh` imports the minimal system the sandbox recipe keeps as
# `selfheal-debian:bookworm`; any Debian bookworm image does (BASE=debian:bookworm-slim).
# The binary is built on the host (`cargo build --release --no-default-features`: no stand-in)
# and copied in: BINARY names it. It links against glibc: build it on Debian bookworm (or
# older), or in a bookworm container.
ARG BASE=selfheal-debian:bookworm

# Postgres and Redis from Debian's packages, for a stack without registry images (first: the
# legacy builder builds every stage before the target).
FROM ${BASE} AS postgres
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
USER postgres
RUN /usr/lib/postgresql/15/bin/initdb -D /var/lib/postgresql/data -U postgres --auth-local=trust --auth-host=scram-sha-256 \
 && echo "host all all 0.0.0.0/0 trust" >> /var/lib/postgresql/data/pg_hba.conf
EXPOSE 5432
CMD ["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/data", "-c", "listen_addresses=*", "-c", "unix_socket_directories=/tmp"]

FROM ${BASE} AS redis
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]

# web and worker. The worker talks to a Docker engine for its sandboxes (see compose.yaml for
# the socket and its trade-off); the sandbox images are built on that engine's host by
# `selfheal sandbox image` (debootstrap needs root there), or given by SELFHEAL_SANDBOX_IMAGE.
FROM ${BASE} AS app
# The base lists Debian's main archive only: security updates first.
RUN echo "deb http://deb.debian.org/debian-security bookworm-security main" >/etc/apt/sources.list.d/security.list \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates curl git \
 && rm -rf /var/lib/apt/lists/*
ARG BINARY=target/release/selfheal
COPY ${BINARY} /usr/local/bin/selfheal
EXPOSE 3000
CMD ["selfheal", "web"]

# The stand-in for the compose check only: a binary built with the `dev` feature, the fixtures
# and the example it serves.
FROM app AS standin
ARG DEV_BINARY=target/compose-bin/selfheal-dev
COPY ${DEV_BINARY} /usr/local/bin/selfheal
COPY fixtures /opt/selfheal/fixtures
COPY examples/rust-format /opt/selfheal/repo
CMD ["selfheal", "standin", "--bind", "0.0.0.0:8080", "--public-url", "http://standin:8080", "--repo", "/opt/selfheal/repo", "--fixtures", "/opt/selfheal/fixtures"]

# `docker build .` gives the app.
FROM app AS release
