# A code-interpreter template: kernelbox and its kernels on Debian 12.
# Build: docker build -f e2b.Dockerfile -t kernelbox-code-interpreter .
# Start command: /opt/kernelbox/start-up.sh (ready when http://localhost:49999/health answers).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin kernelbox

FROM python:3.11-slim-bookworm
ENV DEBIAN_FRONTEND=noninteractive \
    KERNELBOX_HOME=/opt/kernelbox/home \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm ca-certificates git sudo curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kernelbox /usr/local/bin/kernelbox
COPY kernels /opt/kernelbox/kernels
COPY startup/start-up.sh /opt/kernelbox/start-up.sh
# Python venv with ipykernel and the data stack, Deno, bash_kernel, R and the JDK for Java (apt,
# as root).
RUN kernelbox setup --source /opt/kernelbox/kernels
RUN useradd --create-home --shell /bin/bash user
# Login shells reset PATH in /etc/profile; keep the kernels' python and pip first in terminals
# too (commands get the same through BASH_ENV, which the agent sets).
RUN echo 'case ":$PATH:" in *:/opt/kernelbox/home/python/bin:*) ;; *) PATH="/opt/kernelbox/home/python/bin:$PATH" ;; esac' > /etc/profile.d/kernelbox.sh
WORKDIR /home/user
EXPOSE 49999
CMD ["/opt/kernelbox/start-up.sh"]
