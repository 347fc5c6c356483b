# The ragloop job image: what `[jobs] image` names for PAI-DLC jobs (`ragloop train`,
# `ragloop embed --worker i --workers N`), and a way to run the CLI anywhere.
#
#   docker build -t ragloop:0.1.0 .
#   docker tag ragloop:0.1.0 registry.cn-hangzhou.aliyuncs.com/<namespace>/ragloop:0.1.0
#   docker push registry.cn-hangzhou.aliyuncs.com/<namespace>/ragloop:0.1.0
#
# Without an image (`[jobs] image` unset) the loop runs jobs image-free instead: it uploads its
# own binary to the bucket and mounts it into a stock PAI image (ARCHITECTURE.md, pai-client).

# ---- build: the release binary, nothing else
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ragloop --bin ragloop \
 && strip target/release/ragloop

# ---- run: Debian's C library and CA roots (TLS to OSS, PAI, DashScope uses the system roots)
FROM debian:12.12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20230311+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 ragloop \
 && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin ragloop
COPY --from=build /src/target/release/ragloop /usr/local/bin/ragloop
USER 10001:10001
WORKDIR /home/ragloop
CMD ["ragloop", "--help"]
