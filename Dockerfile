# spotd container image: the binary, exactly the shared libraries it loads, a
# CA bundle and a non-root user. No shell, no package manager.
#
#   podman build --isolation=chroot --network=host -t spotd .
#   docker build -t spotd .
#
# Size: Debian's libcurl drags in LDAP, Kerberos, SSH, RTMP, IDN and PSL, and
# its libmicrohttpd GnuTLS with p11-kit, nettle and GMP: 22 MB of libraries
# for an agent that speaks HTTP/1.1 and HTTP/2 over OpenSSL and serves plain
# HTTP. So the build stage compiles Debian's own sources of both (with
# Debian's patches, security fixes included) as static libraries with only
# what spotd uses: libcurl with HTTP(S), OpenSSL, nghttp2 and zlib;
# libmicrohttpd without HTTPS. The rest (glibc, OpenSSL, libsystemd, cJSON)
# are Debian's shared libraries, copied as ldd lists them. About 13 MB.

ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm

FROM ${DEBIAN_IMAGE} AS build
# Marks this stage's layers (tests/image-test.sh prunes old ones by it).
LABEL io.spotd.stage=build
# The mirrors are arguments so a build can use the same mirror as the host.
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
ENV DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
# Security updates matter here: the final image carries these libraries.
RUN rm -f /etc/apt/sources.list.d/debian.sources \
 && printf '%s\n' \
      "deb ${DEBIAN_MIRROR} bookworm main" \
      "deb ${DEBIAN_MIRROR} bookworm-updates main" \
      "deb ${DEBIAN_SECURITY_MIRROR} bookworm-security main" \
      "deb-src ${DEBIAN_MIRROR} bookworm main" \
      "deb-src ${DEBIAN_SECURITY_MIRROR} bookworm-security main" \
      > /etc/apt/sources.list \
 && apt-get update -q \
 && apt-get upgrade -y -q \
 && apt-get install -y -q --no-install-recommends \
      build-essential cmake pkg-config dpkg-dev \
      ca-certificates libcjson-dev libsystemd-dev libssl-dev libnghttp2-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /deps
RUN apt-get update -q \
 && apt-get source -q curl libmicrohttpd \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f ./*.tar.* ./*.dsc

# libcurl: HTTP and HTTPS only (IMDS, the API server, the JobManagers).
RUN cmake -S curl-*/ -B curl-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/opt/deps \
      -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_SHARED_LIBS=OFF -DBUILD_CURL_EXE=OFF \
      -DBUILD_TESTING=OFF -DENABLE_MANUAL=OFF -DHTTP_ONLY=ON -DCURL_USE_OPENSSL=ON \
      -DUSE_NGHTTP2=ON -DCURL_ZLIB=ON -DCURL_BROTLI=OFF -DCURL_ZSTD=OFF -DUSE_LIBIDN2=OFF \
      -DCURL_USE_LIBSSH2=OFF -DCURL_USE_GSSAPI=OFF -DCURL_DISABLE_LDAP=ON -DCURL_DISABLE_LDAPS=ON \
      -DCURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt -DCURL_CA_PATH=/etc/ssl/certs \
 && cmake --build curl-build -j"$(nproc)" \
 && cmake --install curl-build

# libmicrohttpd: plain HTTP (the health endpoints), no GnuTLS. Debian's
# patches touch only C files, so the shipped configure script is current.
RUN cd libmicrohttpd-*/ \
 && ./configure -q --prefix=/opt/deps --disable-shared --enable-static --with-pic \
      --disable-https --without-gnutls --disable-doc --disable-examples --disable-curl \
 && make -j"$(nproc)" -C src/microhttpd >/dev/null \
 && make -C src/microhttpd install >/dev/null \
 && make -C src/include install >/dev/null \
 && make install-pkgconfigDATA >/dev/null

COPY . /src
ARG SPOTD_GIT=unknown
# The static libraries' own dependencies go last on the link line.
RUN export PKG_CONFIG_PATH=/opt/deps/lib/pkgconfig \
 && cmake -S /src -B /build -DCMAKE_BUILD_TYPE=Release -DSPOTD_TESTS=OFF -DSPOTD_WERROR=ON \
      -DSPOTD_GIT_ID="${SPOTD_GIT}" \
      -DCMAKE_C_STANDARD_LIBRARIES="$(pkg-config --static --libs libcurl libmicrohttpd)" \
 && cmake --build /build -j"$(nproc)" \
 && install -D -s /build/agent/spotd /rootfs/usr/bin/spotd

# The final tree: every library ldd names, at its path under /usr (merged
# /usr: /lib and /lib64 are links), the CA bundle and the user database.
RUN set -e; cd /rootfs \
 && for lib in $(ldd usr/bin/spotd | grep -o '/[^ ]*'); do \
      dest="/rootfs/usr${lib#/usr}"; mkdir -p "${dest%/*}"; cp -L "$lib" "$dest"; \
    done \
 && ln -s usr/lib lib \
 && if [ -d usr/lib64 ]; then ln -s usr/lib64 lib64; fi \
 && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nspotd:x:65532:65532:spotd:/nonexistent:/sbin/nologin\n' > etc/passwd \
 && printf 'root:x:0:\nspotd:x:65532:\n' > etc/group \
 && printf 'hosts: files dns\n' > etc/nsswitch.conf \
 && mkdir -p tmp run && chmod 1777 tmp

FROM scratch
LABEL org.opencontainers.image.title="spotd" \
      org.opencontainers.image.description="Per-node agent that makes spot capacity safe for Apache Flink on Kubernetes"
COPY --from=build /rootfs/ /
USER 65532:65532
EXPOSE 9808
ENTRYPOINT ["/usr/bin/spotd"]
CMD ["run"]
