# systemd as PID 1 on top of a minimal Debian/Ubuntu root file system, for Molecule.
# BASE is a debootstrap import (tools/harness.py) or, with a registry, e.g. ubuntu:24.04.
ARG BASE
FROM ${BASE}

ENV container=docker \
    DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8

# Extra CA certificates of the host (TLS-intercepting proxies), so that the containers
# reach package indexes the way the host does. The folder may hold only a placeholder.
COPY ca-certificates/ /usr/local/share/ca-certificates/

# apt uses the test run's package cache when one answers on the gateway (see the script).
COPY apt-proxy-detect /usr/local/lib/wsgistack/apt-proxy-detect
RUN echo 'Acquire::http::Proxy-Auto-Detect "/usr/local/lib/wsgistack/apt-proxy-detect";' \
        > /etc/apt/apt.conf.d/30wsgistack-package-cache

# Ansible sends every task a new zip of its module code, which Python compiles again on each
# import: keep the compiled code by a digest of its source (about a quarter of a task's CPU).
COPY wsgistack_zipcache.py /usr/lib/python3/dist-packages/wsgistack_zipcache.py
RUN echo 'import wsgistack_zipcache' > /usr/lib/python3/dist-packages/wsgistack_zipcache.pth \
    && install -d -m 0755 /var/cache/wsgistack-pyc

# The apt lists stay in the image: tasks that use cache_valid_time would otherwise
# believe a cache with no lists is fresh and find no package.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        iproute2 \
        procps \
        python3 \
        python3-apt \
        sudo \
        systemd \
        systemd-sysv \
    && update-ca-certificates \
    && rm -f /usr/local/share/ca-certificates/.keep \
    && find /etc/systemd/system/*.wants -type l \
        \( -name 'getty*' -o -name 'systemd-timesyncd*' -o -name 'e2scrub*' \) -delete \
    && systemctl mask \
        systemd-udevd.service systemd-udevd-kernel.socket systemd-udevd-control.socket \
        systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
        sys-kernel-tracing.mount getty.target console-getty.service \
    && apt-get clean

STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
